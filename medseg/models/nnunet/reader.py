"""The array nnU-Net's image reader would give the network, from any medseg :class:`~medseg.io.image.Image`.

nnU-Net reads each case with the class named by ``plans["image_reader_writer"]``
and works on a ``(channels, *spatial)`` float32 array with a spacing list in
the same (reversed, SimpleITK) axis order. medseg has already read the image
(DICOM series, NIfTI, NRRD, PNG...) into ``array[i, j, k]`` = x, y, z with its
LPS geometry, so each reader becomes an exact index mapping:

* ``SimpleITKIO`` (and ``NibabelIO``): the stored voxel order, no
  reorientation, axes reversed (``[z, y, x]``); 2D images become ``(1, y, x)``
  with the spacing ``999 * max`` in front.
* ``NibabelIOWithReorient``: first reoriented to the closest RAS axes
  (nibabel's ``io_orientation`` of the RAS affine), then reversed.
* ``SimpleITKIOWithReorient``: reoriented to RAS as SimpleITK's
  ``DICOMOrient(image, "RAS")`` does, then reversed.
* ``NaturalImage2DIO`` (PNG, BMP, TIFF; JPEG read by medseg): ``(channels, 1,
  rows, columns)``, spacing ``(999, 1, 1)`` whatever the file says.

:class:`ReaderMapping` also holds the way back, so the label map lands on the
input's exact grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medseg.errors import ModelError
from medseg.io.image import Image

READERS = ("SimpleITKIO", "NibabelIO", "NibabelIOWithReorient", "SimpleITKIOWithReorient", "NaturalImage2DIO")
_RAS_LETTERS = "RAS"


@dataclass(frozen=True)
class ReaderMapping:
    """How one image maps to nnU-Net's array and back.

    Attributes
    ----------
    perm : tuple of int
        nnU-Net spatial axis ``a`` is medseg axis ``perm[a]`` (3 entries; a 2D image has the dummy axis ``-1``).
    flips : tuple of bool
        Per nnU-Net axis: reversed relative to medseg.
    spacing : tuple of float
        The spacing nnU-Net's reader reports, in nnU-Net axis order.
    shape : tuple of int
        The medseg spatial shape.
    """

    perm: tuple[int, ...]
    flips: tuple[bool, ...]
    spacing: tuple[float, ...]
    shape: tuple[int, ...]

    def forward(self, array: np.ndarray, channel_axis: bool) -> np.ndarray:
        """``(c, a0, a1, a2)`` float32, C-contiguous (as ``np.vstack`` of reader arrays gives), from a medseg array."""
        arr = np.asarray(array)
        if not channel_axis:
            arr = arr[..., None]
        nd = len(self.shape)
        if nd == 2:
            arr = arr[:, :, None, :]  # dummy axis at medseg position 2, channels last
        order = [(2 if p == -1 else p) for p in self.perm]
        arr = np.transpose(arr, [nd if nd == 3 else 3, *order])
        flips = [a + 1 for a, f in enumerate(self.flips) if f]
        if flips:
            arr = np.flip(arr, flips)
        return np.ascontiguousarray(arr, dtype=np.float32)

    def forward_labels(self, array: np.ndarray) -> np.ndarray:
        """A label map on the medseg grid -> ``(1, a0, a1, a2)`` float32 (a previous stage's segmentation)."""
        return self.forward(array, channel_axis=False)

    def backward(self, seg: np.ndarray) -> np.ndarray:
        """A ``(a0, a1, a2)`` array in nnU-Net order -> the medseg spatial shape."""
        arr = seg
        flips = [a for a, f in enumerate(self.flips) if f]
        if flips:
            arr = np.flip(arr, flips)
        order = [(2 if p == -1 else p) for p in self.perm]
        arr = np.transpose(arr, np.argsort(order))
        if len(self.shape) == 2:
            arr = arr[:, :, 0]
        if arr.shape != self.shape:  # a bug, never the user's input
            raise RuntimeError(f"nnU-Net reader inverse gave shape {arr.shape}, expected {self.shape}")
        return np.ascontiguousarray(arr)


def _reversed_axes(image: Image, name: str) -> ReaderMapping:
    if image.ndim == 3:
        return ReaderMapping((2, 1, 0), (False,) * 3, tuple(float(s) for s in image.spacing[::-1]), image.shape)
    if name.startswith("Nibabel"):
        raise ModelError(f"the model's reader {name} reads 3D images only; the image is 2D", image.source)
    sx, sy = image.spacing
    return ReaderMapping((-1, 1, 0), (False,) * 3, (max(sx, sy) * 999, float(sy), float(sx)), image.shape)


def _reoriented(image: Image, perm_flip: list[tuple[int, bool]], name: str) -> ReaderMapping:
    """``perm_flip[w]``: the medseg axis that becomes RAS-ordered axis ``w`` and whether it is reversed."""
    if image.ndim != 3:
        raise ModelError(f"the model's reader {name} reads 3D images only; the image is 2D", image.source)
    # reoriented array axes w = 0, 1, 2; then nnU-Net reverses them: nnU-Net axis a = reoriented axis 2 - a
    perm = tuple(perm_flip[2 - a][0] for a in range(3))
    flips = tuple(perm_flip[2 - a][1] for a in range(3))
    spacing = tuple(float(image.spacing[p]) for p in perm)
    return ReaderMapping(perm, flips, spacing, image.shape)


def _nibabel_closest_ras(image: Image) -> list[tuple[int, bool]]:
    from nibabel.orientations import io_orientation

    ornt = io_orientation(image.affine_ras)  # input axis i -> (output axis, flip)
    out: list[tuple[int, bool]] = [(0, False)] * 3
    for i, (axis, flip) in enumerate(ornt):
        out[int(axis)] = (i, bool(flip == -1))
    return out


def _sitk_ras(image: Image) -> list[tuple[int, bool]]:
    """What ``DICOMOrient(image, "RAS")`` does: axis w points toward R, A, S (the letters medseg's ``orientation`` uses)."""
    direction = image.direction
    out: list[tuple[int, bool]] = [(0, False)] * 3
    used = set()
    for i in range(3):
        col = direction[:, i]
        w = int(np.argmax(np.abs(col)))
        if w in used:
            raise ModelError("the image's direction cosines do not name three distinct axes", image.source)
        used.add(w)
        # LPS world axis w positive points toward L, P, S; RAS wants R, A, S: flip x and y world axes
        toward_positive_lps = col[w] > 0
        wants_positive_lps = w == 2
        out[w] = (i, toward_positive_lps != wants_positive_lps)
    return out


def _natural(image: Image, name: str) -> ReaderMapping:
    if image.ndim != 2:
        raise ModelError(f"the model's reader {name} reads 2D pictures only; the image is 3D", image.source)
    return ReaderMapping((-1, 1, 0), (False,) * 3, (999.0, 1.0, 1.0), image.shape)


def reader_mapping(name: str, image: Image) -> ReaderMapping:
    """The :class:`ReaderMapping` of reader ``name`` for ``image``."""
    if name in ("SimpleITKIO", "NibabelIO"):
        return _reversed_axes(image, name)
    if name == "NibabelIOWithReorient":
        return _reoriented(image, _nibabel_closest_ras(image), name)
    if name == "SimpleITKIOWithReorient":
        return _reoriented(image, _sitk_ras(image), name)
    if name == "NaturalImage2DIO":
        return _natural(image, name)
    raise ModelError(f"image reader {name!r} is not supported (medseg reproduces {', '.join(READERS)})")


def channels_of(name: str, image: Image) -> int:
    """The channel count nnU-Net's reader would give (an RGBA picture is 4 channels)."""
    return image.n_channels


def spatial_dims_of_reader(name: str) -> int | None:
    """2 for ``NaturalImage2DIO``, 3 for the NIfTI-only readers, None (either) for SimpleITK."""
    if name == "NaturalImage2DIO":
        return 2
    if name.startswith("Nibabel") or name == "SimpleITKIOWithReorient":
        return 3
    return None
