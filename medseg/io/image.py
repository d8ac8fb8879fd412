"""The :class:`Image` type: voxels plus the geometry that places them in the patient.

Conventions (the same as ITK/SimpleITK index order and as nibabel/MONAI arrays):

* ``array`` is indexed ``[i, j, k]`` along the image's own axes x, y, z
  (2D: ``[i, j]`` = ``[column, row]``); a trailing axis beyond the spatial ones
  holds channels (RGB) or time/components (4D NIfTI).
* World coordinates are DICOM/ITK patient coordinates, **LPS**, in mm.
* ``spacing[a]`` is the distance in mm between neighbours along array axis
  ``a``; ``origin`` is the world position of voxel ``(0, 0, 0)``; column ``a``
  of ``direction`` is the unit vector of axis ``a`` in world space.
* ``affine`` maps ``(i, j, k, 1)`` to LPS mm; ``affine_ras`` to RAS mm (what
  nibabel and MONAI use).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from medseg.errors import GeometryError, LabelError

_AXIS_LETTERS_LPS = (("L", "R"), ("P", "A"), ("S", "I"))  # (positive, negative) world direction per LPS axis
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Image:
    """A 2D or 3D image (optionally multi-channel) with its physical geometry.

    Parameters
    ----------
    array : ndarray
        Voxels, spatial axes first (``[i, j]`` or ``[i, j, k]``), optionally one
        trailing channel/time axis.
    spacing : tuple of float
        Voxel size per spatial axis, mm.
    origin : tuple of float
        World (LPS) position of the first voxel's centre, mm.
    direction : ndarray
        ``(ndim, ndim)`` direction cosines, one column per array axis.
    modality : str
        DICOM modality code (``CT``, ``MR``, ``CR``, ``DX``, ``MG``, ``SM``,
        ``OT`` ...) or ``""`` when unknown.
    intensity_unit : str
        Unit of the voxel values: ``"HU"`` for CT, ``""`` when arbitrary.
    spacing_known : bool
        False when no trustworthy spacing was found (e.g. a radiograph without
        PixelSpacing): ``spacing`` then holds 1.0 placeholders and physical
        measurements must say so.
    meta : dict
        Non-identifying metadata (UIDs, body part, manufacturer,
        ``spacing_source``, ...). Patient name/ID only when asked for.
    warnings : list of str
        Geometry or decoding warnings found while reading.
    source : str or None
        The file or folder the image was read from.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image(np.zeros((4, 3, 2), np.int16), spacing=(0.5, 0.5, 2.0))
    >>> img.voxel_volume_mm3
    0.5
    >>> img.orientation
    'LPS'
    """

    array: np.ndarray
    spacing: tuple[float, ...] = ()
    origin: tuple[float, ...] = ()
    direction: np.ndarray | None = None
    modality: str = ""
    intensity_unit: str = ""
    spacing_known: bool = True
    channel_axis: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    source: str | None = None

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        nd = self.ndim
        if nd not in (2, 3):
            raise GeometryError(f"an Image has 2 or 3 spatial axes, got array shape {self.array.shape}", self.source)
        self.spacing = tuple(float(s) for s in (self.spacing or (1.0,) * nd))
        self.origin = tuple(float(o) for o in (self.origin or (0.0,) * nd))
        self.direction = np.eye(nd) if self.direction is None else np.asarray(self.direction, dtype=float).reshape(nd, nd)
        if len(self.spacing) != nd or len(self.origin) != nd:
            raise GeometryError(
                f"spacing {self.spacing} / origin {self.origin} do not match {nd} spatial axes", self.source
            )
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise GeometryError(f"voxel spacing must be positive, got {self.spacing}", self.source)

    # ---- shape -----------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return self.array.ndim - int(self.channel_axis)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape (without the channel axis)."""
        return tuple(self.array.shape[: self.ndim])

    @property
    def n_channels(self) -> int:
        """Number of channels (1 for a scalar image)."""
        return int(self.array.shape[-1]) if self.channel_axis else 1

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm^3 (area in mm^2 for 2D images)."""
        return float(np.prod(self.spacing))

    # ---- geometry ----------------------------------------------------------------
    @property
    def affine(self) -> np.ndarray:
        """``(ndim+1, ndim+1)`` matrix from voxel index to LPS world mm."""
        nd = self.ndim
        a = np.eye(nd + 1)
        a[:nd, :nd] = self.direction @ np.diag(self.spacing)
        a[:nd, nd] = self.origin
        return a

    @property
    def affine_ras(self) -> np.ndarray:
        """4x4 matrix from voxel index to RAS world mm (nibabel/MONAI convention); 3D only."""
        if self.ndim != 3:
            raise GeometryError("affine_ras is defined for 3D images only", self.source)
        return _LPS_TO_RAS @ self.affine

    @property
    def orientation(self) -> str:
        """Axis codes: the world direction each array axis points toward, e.g. ``'LPS'`` or ``'RAS'``.

        For 2D images the code covers the two in-plane axes (``'LP'`` for an
        identity direction).
        """
        letters = []
        for col in self.direction.T:
            w = int(np.argmax(np.abs(col)))
            letters.append(_AXIS_LETTERS_LPS[w][0 if col[w] > 0 else 1])
        return "".join(letters)

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """World (LPS mm) coordinates of voxel indices, shape ``(..., ndim)``."""
        idx = np.asarray(index, dtype=float)
        a = self.affine
        return idx @ a[:-1, :-1].T + a[:-1, -1]

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous voxel indices of world (LPS mm) points, shape ``(..., ndim)``."""
        p = np.asarray(points, dtype=float)
        a = np.linalg.inv(self.affine)
        return p @ a[:-1, :-1].T + a[:-1, -1]

    def same_grid(self, other: Image, atol_mm: float = 1e-3) -> bool:
        """True when ``other`` has the same shape and places every voxel within ``atol_mm`` of ours."""
        if self.shape != other.shape:
            return False
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in self.shape], indexing="ij")).reshape(self.ndim, -1).T
        return bool(np.abs(self.index_to_world(corners) - other.index_to_world(corners)).max() <= atol_mm)

    def crop(self, start: Sequence[int], stop: Sequence[int]) -> Image:
        """The box ``[start, stop)`` (voxel indices per spatial axis, stop exclusive) at its true world position."""
        box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
        origin = tuple(float(v) for v in self.index_to_world(np.asarray(start, dtype=float)))
        return replace(self, array=np.ascontiguousarray(self.array[box]), origin=origin, meta=dict(self.meta),
                       warnings=[])

    def with_array(self, array: np.ndarray, **changes: Any) -> Image:
        """A new Image on the same grid holding ``array`` (e.g. a label map for this scan).

        Metadata is copied; ``warnings`` starts empty unless given.
        """
        new: dict[str, Any] = {"array": array, "meta": dict(self.meta), "warnings": [], "channel_axis": False}
        new.update(changes)
        return replace(self, **new)

    def with_labels(self, array: np.ndarray, label_names: dict[int, str] | None = None, **changes: Any) -> LabelMap:
        """A :class:`LabelMap` on this image's grid holding ``array`` (integer labels).

        ``label_names`` defaults to this image's own when it is a label map.
        """
        names = label_names if label_names is not None else dict(getattr(self, "label_names", {}))
        base = {f.name: getattr(self, f.name) for f in fields(Image)}
        base.update(array=array, meta=dict(self.meta), warnings=[], channel_axis=False, intensity_unit="")
        base.update(changes)
        return LabelMap(**base, label_names=names)

    def _repr_html_(self) -> str:
        """The notebook card (:func:`medseg.report.display.image_html`): properties and a three-plane thumbnail."""
        # the renderer is named as a string and imported on use (as io/formats.py names readers): the core type
        # never imports matplotlib or the report layer
        return importlib.import_module("medseg.report.display").image_html(self)

    def __repr__(self) -> str:
        sp = "x".join(f"{s:.4g}" for s in self.spacing)
        unit = "mm" if self.spacing_known else "px (spacing unknown)"
        ch = f", {self.n_channels} channels" if self.channel_axis else ""
        return (
            f"Image({'x'.join(map(str, self.shape))} {self.array.dtype}{ch}, spacing {sp} {unit}, "
            f"{self.orientation}, modality={self.modality or '?'})"
        )


@dataclass(repr=False)
class LabelMap(Image):
    """An :class:`Image` whose voxels are labels: unsigned integers, one per voxel, 0 = background.

    Resampling picks nearest neighbour for a LabelMap (and linear for an
    intensity Image) by type. Build one from any array with
    :func:`medseg.labelmap.as_label_map` (the one place that checks and
    converts) or with :meth:`Image.with_labels`.

    Attributes
    ----------
    label_names : dict of int to str
        Name of each foreground label value (``{1: "liver", 2: "spleen"}``); may be empty.
    """

    label_names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.channel_axis:
            raise LabelError(f"a label map has one value per voxel, got {self.n_channels} channels", self.source)
        if self.array.dtype.kind != "u":
            raise LabelError(
                f"a LabelMap holds unsigned integers, got {self.array.dtype} (convert with medseg.labelmap.as_label_map)",
                self.source,
            )
        self.label_names = {int(k): str(v) for k, v in self.label_names.items() if int(k) != 0}

    def __repr__(self) -> str:
        names = ", ".join(f"{k}: {v}" for k, v in sorted(self.label_names.items()))
        return super().__repr__().replace("Image(", "LabelMap(", 1)[:-1] + f", labels={{{names}}})"
