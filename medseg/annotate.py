"""Prompted annotation: the structure inside a box or under a few clicks, classically or by a promptable model.

::

    import medseg
    from medseg.annotate import bounding_box, from_box, from_points
    box = [(-120.0, -180.0, -800.0), (-20.0, -90.0, -770.0)]       # two opposite corners, world mm (LPS)
    liver = from_box(ct, box)                                      # the centre's intensity band, bridges cut
    nucleus = from_points(image, [(105.0, 230.0)])                 # confidence-connected growth from the click
    mask = from_box(ct, box, model="sam:/models/medsam_vit_b.pth") # a registered promptable model instead

Boxes and points are in world mm like every coordinate in medseg (for a 2D
picture without a pixel size, world mm are pixel indices ``(column, row)``).
Without ``model`` the classical path runs; with one, any object having the
methods of :class:`medseg.segmenters.Promptable` (or a spec that
:func:`medseg.load_segmenter` resolves to one) serves the same call.
:class:`PredictorPrompter` turns a SAM-style predictor (``set_image`` and
``predict(box=..., point_coords=..., point_labels=...)``, as in
``segment_anything.SamPredictor`` with a MedSAM or SAM checkpoint the user
supplies) into such a model; medseg downloads no weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.errors import ConfigError, ModelError
from medseg.io.image import Image, LabelMap
from medseg.labelmap import CONNECTIVITY, fill_holes, label_components
from medseg.segmenters.base import Promptable, load_segmenter

LABEL_NAMES = {1: "object"}


def bounding_box(labels: Image, value: int | None = None, margin: float = 0.1) -> np.ndarray:
    """``(2, ndim)`` world corners (mm) of label ``value`` (any non-zero label when None), voxel edges included.

    ``margin`` widens the box by that fraction of its side on every side
    (0.1: 10 % beyond the structure at each end of each axis).

    Raises
    ------
    medseg.errors.ConfigError
        When the label is absent.
    """
    present = labels.array > 0 if value is None else labels.array == value
    if not present.any():
        raise ConfigError(f"label {value if value is not None else 'any'} is absent, so it has no bounding box",
                          labels.source)
    idx = np.argwhere(present)
    low, high = idx.min(axis=0) - 0.5, idx.max(axis=0) + 0.5
    pad = margin * (high - low)
    return labels.index_to_world(np.stack([low - pad, high + pad]))


def box_slices(image: Image, box: Any) -> tuple[slice, ...]:
    """The voxels whose centres lie in ``box`` (world corners, mm), clipped to the image.

    Raises
    ------
    medseg.errors.ConfigError
        A malformed box, one of zero size along an axis, or one that covers no voxel of the image.
    """
    corners = np.asarray(box, dtype=float)
    if corners.shape != (2, image.ndim) or not np.isfinite(corners).all():
        raise ConfigError(f"a box is two opposite corners of {image.ndim} coordinates (mm), got {corners.tolist()}",
                          image.source)
    index = image.world_to_index(corners)
    low, high = index.min(axis=0), index.max(axis=0)
    flat = np.flatnonzero(np.isclose(high - low, 0.0))
    if flat.size:
        raise ConfigError(f"box {corners.tolist()} mm has zero size along array axis {int(flat[0])}", image.source)
    start = np.maximum(np.ceil(low - 1e-9), 0).astype(int)
    stop = np.minimum(np.floor(high + 1e-9) + 1, image.shape).astype(int)
    if (stop <= start).any():
        raise ConfigError(f"box {corners.tolist()} mm covers no voxel of the image "
                          f"({'x'.join(map(str, image.shape))} voxels)", image.source)
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))


def _centre(shape: tuple[int, ...], fraction: float) -> np.ndarray:
    """The voxels within ``fraction`` of the half-size from the centre of a box of ``shape`` (an ellipsoid; never empty)."""
    axes = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape]
    inside = sum(g**2 for g in np.meshgrid(*axes, indexing="ij")) <= fraction**2
    inside[tuple(n // 2 for n in shape)] = True
    return inside


def _component_at(mask: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The face-connected component of ``mask`` with most voxels in ``centre`` (empty when none reaches it)."""
    components, n = label_components(mask, CONNECTIVITY[mask.ndim][0])
    hits = np.bincount(components[centre], minlength=n + 1)
    hits[0] = 0
    return components == int(np.argmax(hits)) if hits.max() else np.zeros(mask.shape, bool)


def _box_random_walker(image: Image, box: tuple[slice, ...]) -> np.ndarray:
    """Random walker in the box, seeded by Otsu's split of the box: the structure at the box's centre.

    Otsu's threshold of the box's voxels (scikit-image ``threshold_otsu``)
    gives a first mask, on the side of the centre's median; its face-connected
    component at the centre, eroded, seeds the object, and the box's border
    plus everything beyond the dilated first mask seed the background.
    scikit-image's ``random_walker`` (conjugate gradient, voxel spacing
    honoured) then places the boundary along the strongest intensity change
    between the two, which Otsu alone misses where the structure's edge is
    blurred. Holes are filled.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.segmentation import random_walker

    voxels = np.asarray(image.array[box], dtype=np.float64)
    centre = _centre(voxels.shape, 0.2)
    if np.ptp(voxels) == 0:
        return np.ones(voxels.shape, bool)
    threshold = threshold_otsu(voxels)
    side = voxels > threshold if np.median(voxels[centre]) > threshold else voxels <= threshold
    first = fill_holes(_component_at(side, centre))
    markers = np.zeros(voxels.shape, np.int32)
    markers[~ndimage.binary_dilation(first, iterations=2)] = 2
    border = np.ones(voxels.shape, bool)
    border[tuple(slice(1, -1) if n > 2 else slice(None) for n in voxels.shape)] = False
    markers[border] = 2
    markers[ndimage.binary_erosion(first)] = 1
    if not (markers == 1).any() or not (markers == 2).any():
        return first
    low, high = np.percentile(voxels, [1, 99])
    data = np.clip((ndimage.gaussian_filter(voxels, 1.0) - low) / max(high - low, 1e-6), 0.0, 1.0)
    spacing = np.array(image.spacing) / min(image.spacing)
    walked = random_walker(data, markers, beta=500, mode="cg_j", spacing=spacing) == 1
    return fill_holes(_component_at(walked, centre) if walked[centre].any() else walked)


def _ball(radius_mm: float, spacing: tuple[float, ...]) -> np.ndarray:
    """Footprint of the voxels within ``radius_mm`` of the centre (at least the face neighbours)."""
    reach = [max(1, int(radius_mm // s)) for s in spacing]
    grid = np.meshgrid(*[np.arange(-r, r + 1) * s for r, s in zip(reach, spacing, strict=True)], indexing="ij")
    return sum(g**2 for g in grid) <= max(radius_mm, *spacing) ** 2


def _box_band_3d(image: Image, box: tuple[slice, ...], width: float = 2.0) -> np.ndarray:
    """3D: the voxels of the centre's intensity connected to the centre, with thin bridges cut.

    The structure's intensity is learnt from the centre of the box (median
    and MAD of a 3x3x3-median-filtered copy, scipy.ndimage): voxels within
    ``width`` robust standard deviations of it form a band. An opening by a
    ball of 2.5 % of the box's median side (5 mm for a 20 cm box) cuts the
    thin bridges through which the band reaches neighbouring organs of the
    same density (liver, stomach wall, muscle on CT); the component at the
    centre is grown back by the same ball inside the band, and its holes
    (vessels, lesions) are filled. A random walker cannot separate such
    neighbours: there is no intensity edge between them.
    """
    from scipy import ndimage

    voxels = ndimage.median_filter(np.asarray(image.array[box], dtype=np.float32), size=3)
    centre = _centre(voxels.shape, 0.2)
    level = float(np.median(voxels[centre]))
    low, high = np.percentile(voxels, [1, 99])
    spread = max(1.4826 * float(np.median(np.abs(voxels[centre] - level))), 0.02 * float(high - low))
    band = np.abs(voxels - level) <= width * spread
    ball = _ball(0.025 * float(np.median(np.array(voxels.shape) * np.array(image.spacing))), image.spacing)
    core = _component_at(ndimage.binary_opening(band, structure=ball), centre)
    if not core.any():
        return fill_holes(_component_at(band, centre))
    return fill_holes(_component_at(ndimage.binary_dilation(core, structure=ball) & band, centre))


def _promptable(model: Any) -> Promptable:
    """``model`` (an object or a spec) as a promptable model, or a ModelError saying why not."""
    resolved = load_segmenter(model) if isinstance(model, str) else model
    if not isinstance(resolved, Promptable):
        name = getattr(resolved, "name", type(resolved).__name__)
        raise ModelError(f"{name} takes no prompts (it needs segment_box and segment_points, see medseg.segmenters.Promptable)")
    return resolved


def from_box(image: Image, box: Any, *, model: Any = None) -> LabelMap:
    """The structure inside ``box`` (two opposite corners, world mm): label 1 ``object`` on the image's grid.

    Without ``model``: in 2D a random walker inside the box seeded by Otsu's
    split (see :func:`_box_random_walker`), in 3D the centre's intensity band with
    thin bridges cut (see :func:`_box_band_3d`); the box should hold the
    structure with some margin (its border is taken as background) and its
    centre should lie in the structure. With ``model``
    (a :class:`~medseg.segmenters.Promptable` or a spec resolving to one) the
    model's ``segment_box`` answers.

    Raises
    ------
    medseg.errors.ConfigError
        A malformed or zero-size box, or one outside the image (naming the image's file).
    medseg.errors.ModelError
        ``model`` takes no prompts.
    """
    if model is not None:
        box_slices(image, box)  # the same checks of the box for every model
        return _promptable(model).segment_box(image, np.asarray(box, dtype=float))
    _require_scalar(image)
    region = box_slices(image, box)
    labels = np.zeros(image.shape, np.uint8)
    labels[region] = _box_band_3d(image, region) if image.ndim == 3 else _box_random_walker(image, region)
    return image.with_labels(labels, dict(LABEL_NAMES))


def from_points(image: Image, points: Sequence[Sequence[float]], *, positive: Sequence[bool] | None = None,
                model: Any = None) -> LabelMap:
    """The structure under ``points`` (world mm): label 1 ``object`` on the image's grid.

    Without ``model``: confidence-connected region growing from the points
    (:class:`medseg.classical.ConfidenceConnected`, interval re-estimated from
    the grown region), which needs positive points only. With ``model`` its
    ``segment_points`` answers; ``positive[i]`` False marks a background click.

    Raises
    ------
    medseg.errors.ConfigError
        A point outside the image, or background points without a model.
    """
    from medseg.classical.base import voxel_indices
    from medseg.classical.region import ConfidenceConnected

    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    voxel_indices(image, pts, "point")
    flags = np.ones(len(pts), bool) if positive is None else np.asarray(positive, bool)
    if flags.shape != (len(pts),):
        raise ConfigError(f"positive needs one flag per point ({len(pts)}), got {flags.shape[0] if flags.ndim else 1}")
    if model is not None:
        return _promptable(model).segment_points(image, pts, flags)
    if not flags.all():
        raise ConfigError("background points need a promptable model (model=...); the classical path grows from "
                          "positive points only", image.source)
    _require_scalar(image)
    grown = ConfidenceConnected(seeds=[tuple(p) for p in pts]).segment(image)
    return image.with_labels(fill_holes(grown.array.astype(bool)).view(np.uint8), dict(LABEL_NAMES))


def _require_scalar(image: Image) -> None:
    if image.channel_axis:
        raise ConfigError(f"the classical prompt path needs a single-channel image, this one has {image.n_channels}",
                          image.source)


class PredictorPrompter:
    """A SAM-style predictor as a medseg Segmenter and :class:`~medseg.segmenters.Promptable`.

    ``predictor`` has ``set_image(rgb)`` (``H x W x 3`` uint8, rows first)
    and ``predict(point_coords=, point_labels=, box=, multimask_output=False)``
    returning ``(masks, scores, logits)`` with ``masks`` ``(k, H, W)``, as
    ``segment_anything.SamPredictor``; SAM's pixel coordinates are
    ``(x, y) = (column, row)``. 2D images are prompted once; 3D images slice
    by slice along the last array axis (MedSAM's way), each slice in the box's
    range. Intensities are scaled to 0-255 between their 0.5th and 99.5th
    percentiles (``window`` overrides, e.g. a CT window in HU).

    Parameters
    ----------
    predictor : object
        The predictor, built by the caller from their own checkpoint.
    name : str
        Shown in tables; part of the fingerprint with ``checkpoint``.
    checkpoint : str
        What identifies the weights (a path or a hash), for the fingerprint.
    window : (float, float), optional
        Intensity range mapped to 0-255.
    """

    spatial_dims = None
    in_channels = None
    postprocess = None
    label_names = LABEL_NAMES

    def __init__(self, predictor: Any, *, name: str = "promptable model", checkpoint: str = "",
                 window: tuple[float, float] | None = None) -> None:
        self.predictor, self.name, self.checkpoint, self.window = predictor, name, checkpoint, window

    def fingerprint(self) -> str:
        """Hash of the name, the checkpoint and the window."""
        return hashlib.sha256(f"{self.name}|{self.checkpoint}|{self.window}".encode()).hexdigest()[:16]

    def segment(self, image: Image) -> LabelMap:
        """A promptable model needs a prompt: use :func:`from_box` or :func:`from_points`."""
        raise ModelError(f"{self.name} segments from prompts only: use medseg.annotate.from_box or from_points")

    def segment_box(self, image: Image, box: Any) -> LabelMap:
        """Prompt the predictor with ``box`` (world mm corners) on each slice it covers."""
        region = box_slices(image, box)
        labels = np.zeros(image.shape, np.uint8)
        plane = (region[0].start, region[1].start, region[0].stop - 1, region[1].stop - 1)  # (x0, y0, x1, y1)
        for index in self._slices(image, region):
            labels[index] |= self._predict(image, index, box=np.array(plane, dtype=float))
        return image.with_labels(labels, dict(LABEL_NAMES))

    def segment_points(self, image: Image, points: Any, positive: Any) -> LabelMap:
        """Prompt the predictor with the points on the slices they lie in."""
        from medseg.classical.base import voxel_indices

        index = voxel_indices(image, points, "point")
        labels = np.zeros(image.shape, np.uint8)
        planes = [()] if image.ndim == 2 else sorted({int(k) for k in index[:, 2]})
        for k in planes:
            on = np.ones(len(index), bool) if image.ndim == 2 else index[:, 2] == k
            where = (slice(None), slice(None)) + (() if image.ndim == 2 else (k,))
            coords = index[on][:, :2].astype(float)  # (column, row) = SAM's (x, y)
            labels[where] |= self._predict(image, where, point_coords=coords,
                                           point_labels=np.asarray(positive, int)[on])
        return image.with_labels(labels, dict(LABEL_NAMES))

    @staticmethod
    def _slices(image: Image, region: tuple[slice, ...]) -> list[tuple[Any, ...]]:
        if image.ndim == 2:
            return [(slice(None), slice(None))]
        return [(slice(None), slice(None), k) for k in range(region[2].start, region[2].stop)]

    def _predict(self, image: Image, where: tuple[Any, ...], **prompt: Any) -> np.ndarray:
        """The predictor's mask of one plane ``image.array[where]``, back in medseg's ``[column, row]`` order."""
        plane = np.asarray(image.array[where], dtype=np.float64)
        low, high = self.window or tuple(np.percentile(image.array, [0.5, 99.5]))
        scaled = np.clip((plane - low) / max(high - low, 1e-9) * 255.0, 0, 255).astype(np.uint8)
        rgb = scaled if scaled.ndim == 3 else np.repeat(scaled[..., None], 3, axis=-1)
        self.predictor.set_image(np.ascontiguousarray(rgb.transpose(1, 0, 2)))  # rows first, as SAM expects
        masks, _, _ = self.predictor.predict(multimask_output=False, **prompt)
        mask = np.asarray(masks)[0].T.astype(bool)
        if mask.shape != plane.shape[:2]:
            raise ModelError(f"{self.name} returned a {mask.shape[::-1]} mask for a {plane.shape[1::-1]} image")
        return mask.view(np.uint8)
