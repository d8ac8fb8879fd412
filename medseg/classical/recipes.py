"""Recipes: classical pipelines for common jobs, each with the limits it has.

Every recipe is a Segmenter with physical parameters, built from the methods
of :mod:`medseg.classical` and the label helpers (cc3d components, hole
filling). What each one gets right and wrong on the shared real data is in
``docs/RESULTS.md`` (``benchmarks/real_data_classical.py``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from medseg.classical.base import ClassicalSegmenter, from_sitk_array, register, scalar_voxels, to_sitk_scalar
from medseg.classical.threshold import Otsu
from medseg.classical.watershed import SplitObjects, typical_separation
from medseg.io.image import Image
from medseg.labelmap import CONNECTIVITY, fill_holes, label_components
from medseg.postprocess import Length, Size, length_voxels, size_mm


def axial_axis(image: Image) -> tuple[int, bool]:
    """The array axis closest to the patient's head-foot direction, and whether its last index is the most superior."""
    axis = int(np.argmax(np.abs(image.direction[2])))
    return axis, bool(image.direction[2, axis] > 0)


def fill_holes_per_slice(mask: np.ndarray, axis: int) -> np.ndarray:
    """:func:`medseg.labelmap.fill_holes` in every slice across ``axis`` (cavities open at the volume's ends)."""
    filled = np.empty_like(mask, dtype=bool)
    for k in range(mask.shape[axis]):
        index = (slice(None),) * axis + (k,)
        filled[index] = fill_holes(mask[index])
    return filled


def keep_components(mask: np.ndarray, keep: np.ndarray, components: np.ndarray) -> np.ndarray:
    """``mask`` restricted to the components whose entry of ``keep`` (indexed 1..n) is True."""
    return np.concatenate([[False], keep])[components] & mask


def _morphology(mask: np.ndarray, image: Image, radius: str, operation: str) -> np.ndarray:
    """SimpleITK binary ``opening``/``closing``/``dilation`` with a ball of ``radius`` (a length, per-axis voxels)."""
    import SimpleITK as sitk

    voxels = [int(r) for r in np.rint(length_voxels(radius, image))]
    if not any(voxels):
        return mask
    source = to_sitk_scalar(image, mask.astype(np.uint8))
    run = {"opening": sitk.BinaryMorphologicalOpening, "closing": sitk.BinaryMorphologicalClosing,
           "dilation": sitk.BinaryDilate}[operation]
    return from_sitk_array(run(source, voxels, sitk.sitkBall)).astype(bool)  # foreground 1, ball kernel


@register
class CTBodyMask(ClassicalSegmenter):
    """The patient's body in a CT: label 1 ``body``.

    Voxels above ``threshold`` HU, opened by a ball of ``opening`` (SimpleITK)
    to detach the table and blankets, the largest 6-connected component (cc3d),
    holes filled in every axial slice (lungs, bowel gas).

    Limits: a table or blanket touching the body over more than twice
    ``opening`` stays attached; an arm lying apart from the trunk is dropped
    (only the largest component is kept), and so is the smaller of two
    bodies; it expects HU (a rescaled or MR image fails silently).
    """

    method: ClassVar[str] = "ct_body"
    spatial_dims: ClassVar[int | None] = 3
    label_names: ClassVar[dict[int, str]] = {1: "body"}
    threshold: float = -500.0
    opening: Length = "3 mm"

    def _labels(self, image: Image) -> np.ndarray:
        tissue = _morphology(image.array > self.threshold, image, self.opening, "opening")
        components, n = label_components(tissue, 6)
        if n == 0:
            return tissue
        largest = np.argmax(np.bincount(components.ravel(order="K"), minlength=n + 1)[1:]) + 1
        return fill_holes_per_slice(components == largest, axial_axis(image)[0])


@register
class CTLungs(ClassicalSegmenter):
    """The lungs in a CT: label 1 ``lungs`` (both together).

    Inside the body mask (:class:`CTBodyMask`), voxels below ``air`` HU; the
    airways are the pure air (below ``pure_air`` HU) connected to the
    scan's superior end (trachea, main bronchi), removed with a one-voxel
    margin; of the remaining 6-connected components, those of at least
    ``min_volume`` whose fraction of pure-air voxels is at most
    ``gas_fraction`` (lung parenchyma is air mixed with tissue, bowel gas and
    outside air are not) are the lungs; holes (vessels) are filled in every
    axial slice and in 3D.

    Limits: severe emphysema (more than ``gas_fraction`` of the lung below
    ``pure_air``) reads as gas and is dropped; consolidation, effusion and
    tumour (above ``air``) are left out; a pneumothorax is kept as lung;
    left and right lungs are not separated.
    """

    method: ClassVar[str] = "ct_lungs"
    spatial_dims: ClassVar[int | None] = 3
    label_names: ClassVar[dict[int, str]] = {1: "lungs"}
    air: float = -400.0
    pure_air: float = -950.0
    gas_fraction: float = Field(0.2, ge=0, le=1)
    min_volume: Size = "10 ml"
    body_threshold: float = -500.0

    def _labels(self, image: Image) -> np.ndarray:
        body = CTBodyMask(threshold=self.body_threshold).segment(image).array.astype(bool)
        voxels = image.array
        air = body & (voxels < self.air)
        air &= ~self._airways(image, air & (voxels < self.pure_air))
        components, n = label_components(air, 6)
        count = np.bincount(components.ravel(order="K"), minlength=n + 1)[1:]
        pure = np.bincount(components[voxels < self.pure_air], minlength=n + 1)[1:]
        keep = (count * image.voxel_volume_mm3 >= size_mm(self.min_volume, image)) & (pure <= self.gas_fraction * count)
        lungs = keep_components(air, keep, components)
        return fill_holes(fill_holes_per_slice(lungs, axial_axis(image)[0]))

    def _airways(self, image: Image, pure_air: np.ndarray) -> np.ndarray:
        """Pure air 6-connected to the scan's most superior slice, dilated by one voxel."""
        axis, last_is_superior = axial_axis(image)
        components, n = label_components(pure_air, 6)
        top = components[(slice(None),) * axis + (-1 if last_is_superior else 0,)]
        airway = np.zeros(n + 1, bool)
        airway[np.unique(top)] = True
        airway[0] = False
        if not airway.any():
            return np.zeros(image.shape, bool)
        return _morphology(airway[components], image, "1 px", "dilation")


@register
class CTBone(ClassicalSegmenter):
    """Bone in a CT: label 1 ``bone``.

    Inside the body mask, voxels at or above ``threshold`` HU, components of
    at least ``min_volume`` (cc3d, 26-connected), marrow filled in every axial slice.

    Limits: contrast-filled vessels, kidneys and bowel, calcifications and
    metal above ``threshold`` are taken for bone; thin or osteoporotic bone
    below it (skull base, ribs at low dose, vertebral bodies) is missed; no
    separation into bones.
    """

    method: ClassVar[str] = "ct_bone"
    spatial_dims: ClassVar[int | None] = 3
    label_names: ClassVar[dict[int, str]] = {1: "bone"}
    threshold: float = 150.0
    min_volume: Size = "0.5 ml"
    body_threshold: float = -500.0

    def _labels(self, image: Image) -> np.ndarray:
        body = CTBodyMask(threshold=self.body_threshold).segment(image).array.astype(bool)
        dense = body & (image.array >= self.threshold)
        components, n = label_components(dense, 26)
        count = np.bincount(components.ravel(order="K"), minlength=n + 1)[1:]
        bone = keep_components(dense, count * image.voxel_volume_mm3 >= size_mm(self.min_volume, image), components)
        return fill_holes_per_slice(bone, axial_axis(image)[0])


@register
class HETissue(ClassicalSegmenter):
    """Tissue on an H&E slide thumbnail (RGB): label 1 ``tissue``.

    Stained tissue is coloured, glass is white and grey: Otsu's threshold
    (SimpleITK) of the HSV saturation (scikit-image ``rgb2hsv``), dark
    pixels (value below ``min_value``: pen, slide edge, dirt) excluded, a
    closing of ``closing`` (a length; px on thumbnails without a pixel size),
    holes filled, pieces below ``min_fraction`` of the largest one dropped.

    Limits: faint or unstained tissue (fat, mucus) on a bright background is
    missed; coloured pen marks and bubbles' rims count as tissue; it expects
    a brightfield RGB thumbnail, not a fluorescence image.
    """

    method: ClassVar[str] = "he_tissue"
    spatial_dims: ClassVar[int | None] = 2
    in_channels: ClassVar[int | None] = 3
    label_names: ClassVar[dict[int, str]] = {1: "tissue"}
    closing: Length = "3 px"
    min_value: float = Field(0.15, ge=0, le=1)
    min_fraction: float = Field(0.01, ge=0, le=1)

    def _labels(self, image: Image) -> np.ndarray:
        from skimage.color import rgb2hsv

        hsv = rgb2hsv(image.array[..., :3])
        saturation = image.with_array(hsv[..., 1].astype(np.float32))
        tissue = Otsu().segment(saturation).array.astype(bool) & (hsv[..., 2] >= self.min_value)
        tissue = fill_holes(_morphology(tissue, image, self.closing, "closing"))
        components, n = label_components(tissue, 8)
        count = np.bincount(components.ravel(order="K"), minlength=n + 1)[1:]
        return keep_components(tissue, count >= self.min_fraction * count.max(initial=0), components)


@register
class XrayLungs(ClassicalSegmenter):
    """The lung fields on a frontal chest radiograph: label 1 ``lungs``.

    The radiograph is equalised (scikit-image CLAHE, tiles of an eighth of
    its width) and smoothed; the dark side of Otsu's threshold (SimpleITK),
    opened to cut thin dark bridges, minus what touches the image border
    (air beside the body), gives the two largest components; they are closed
    and their holes filled. Sizes are fractions of the image width, so the
    recipe needs no pixel size (most radiograph files carry none).

    Limits: lungs that reach the image border through dark air are lost; the
    lung behind the heart and below the diaphragm dome is not included (it
    is in manual masks such as JSRT's); large effusions or a white-out lung
    leave only one component; it expects lungs dark (not an inverted image).
    """

    method: ClassVar[str] = "xray_lungs"
    spatial_dims: ClassVar[int | None] = 2
    label_names: ClassVar[dict[int, str]] = {1: "lungs"}
    smoothing: float = Field(0.005, ge=0, le=0.1)
    opening: float = Field(0.01, ge=0, le=0.1)
    closing: float = Field(0.02, ge=0, le=0.1)

    def _labels(self, image: Image) -> np.ndarray:
        from scipy import ndimage
        from skimage.exposure import equalize_adapthist, rescale_intensity
        from skimage.morphology import disk

        width = max(image.shape)
        voxels = rescale_intensity(scalar_voxels(image), out_range=(0.0, 1.0))
        voxels = ndimage.gaussian_filter(equalize_adapthist(voxels, kernel_size=max(8, width // 8)), self.smoothing * width)
        dark = Otsu(foreground="dark").segment(image.with_array(voxels.astype(np.float32))).array.astype(bool)
        dark = ndimage.binary_opening(dark, structure=disk(max(1, round(self.opening * width))))
        components, n = label_components(dark, 4)
        count = np.bincount(components.ravel(order="K"), minlength=n + 1).astype(float)
        for edge in (components[0], components[-1], components[:, 0], components[:, -1]):
            count[edge] = 0
        count[0] = 0
        largest = np.argsort(-count)[:2]
        lungs = np.isin(components, largest[count[largest] > 0])
        closed = ndimage.binary_closing(lungs, structure=disk(max(1, round(self.closing * width))))
        return fill_holes(closed | lungs)


@register
class FluoNuclei(SplitObjects):
    """Nuclei in a fluorescence image: Otsu + distance watershed, an instance map (one value per nucleus).

    The image is smoothed (Gaussian of ``smoothing``) and its uneven
    background removed (a Gaussian of ``background`` times the typical
    nucleus radius, measured on a first Otsu mask); Otsu's threshold
    (SimpleITK) of the corrected image, holes filled, specks below
    ``min_fraction`` of the median nucleus dropped, then split by the
    distance watershed of :class:`~medseg.classical.watershed.SplitObjects` with seeds
    ``separation`` times the typical radius apart. Every scale follows the
    nuclei, so it needs no pixel size.

    Limits: clumps of nuclei of very different sizes are split by one
    separation; dim nuclei beside bright ones fall below the global
    threshold; out-of-focus haze and debris of nucleus size count as nuclei.
    """

    method: ClassVar[str] = "fluo_nuclei"
    smoothing: Length = "1 px"
    background: float = Field(2.0, gt=0)
    min_fraction: float = Field(0.1, ge=0, le=1)

    def foreground_mask(self, image: Image) -> np.ndarray:
        from scipy import ndimage

        raw = scalar_voxels(image)
        smooth = ndimage.gaussian_filter(raw, length_voxels(self.smoothing, image))
        first = fill_holes(Otsu().segment(image.with_array(smooth)).array.astype(bool))
        components, n = label_components(first, CONNECTIVITY[image.ndim][-1])
        radius = length_voxels(typical_separation(components, n, image, self.background), image)
        corrected = smooth - ndimage.gaussian_filter(raw, radius)
        mask = fill_holes(Otsu().segment(image.with_array(corrected)).array.astype(bool))
        components, n = label_components(mask, CONNECTIVITY[image.ndim][-1])
        count = np.bincount(components.ravel(order="K"), minlength=n + 1)[1:]
        return keep_components(mask, count >= self.min_fraction * (np.median(count) if n else 0), components)

