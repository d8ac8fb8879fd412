"""The base of every classical method: parameters, their spec text, the registry, shared conversions.

A method is a :class:`ClassicalSegmenter` subclass whose pydantic fields are its
parameters (physical units where they are lengths or sizes: ``"2 mm"``,
``"30 um2"``, ``"10 px"``; intensities in the image's own unit, HU for CT).
Its spec is ``classical:NAME`` or ``classical:NAME:key=value,key=value``;
points (seeds) are ``x/y/z`` in world mm (LPS), several joined by ``;``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from medseg.errors import ConfigError, GeometryError
from medseg.io.image import Image, LabelMap

SCHEME = "classical"
ALGORITHM_VERSION = 1
"""Bumped when a method's output changes for the same parameters (part of every fingerprint)."""

METHODS: dict[str, type[ClassicalSegmenter]] = {}
"""Method name -> class, filled by :func:`register` as the method modules are imported."""


def _parse_points(value: Any) -> Any:
    """``"x/y/z;x/y/z"`` (spec text) or one point -> a list of points; other values are left to validation."""
    if isinstance(value, str):
        try:
            return [[float(c) for c in part.split("/")] for part in value.split(";") if part.strip()]
        except ValueError as exc:
            raise ValueError(f"points are x/y[/z] in mm, several joined by ';', got {value!r}") from exc
    if isinstance(value, Sequence) and value and np.isscalar(value[0]):
        return [value]
    return value


def _check_points(points: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
    if not points:
        raise ValueError("at least one point is needed")
    if len({len(p) for p in points}) != 1 or len(points[0]) not in (2, 3):
        raise ValueError("every point needs the same 2 or 3 coordinates (x/y[/z] in mm)")
    return points


Points = Annotated[list[tuple[float, ...]], BeforeValidator(_parse_points), AfterValidator(_check_points)]
"""World points (LPS mm): ``[(x, y, z), ...]`` in Python, ``x/y/z;x/y/z`` in a spec."""


def _render(value: Any) -> str:
    """A parameter value as spec text (the inverse of parsing)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, ".12g")
    if isinstance(value, list | tuple) and value and isinstance(value[0], list | tuple):
        return ";".join("/".join(_render(float(c)) for c in p) for p in value)
    return str(value)


def _message(method: str, exc: ValidationError) -> str:
    """The first pydantic error as one line naming the parameter."""
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "parameters"
    if first["type"] == "extra_forbidden":
        known = ", ".join(METHODS[method].model_fields) if method in METHODS else ""
        return f"{SCHEME}:{method}: unknown parameter {key!r} (known: {known or 'none'})"
    if first["type"] == "missing":
        return f"{SCHEME}:{method}: missing parameter {key!r}"
    return f"{SCHEME}:{method}: parameter {key!r}: {first['msg'].removeprefix('Value error, ')}"


class ClassicalSegmenter(BaseModel):
    """A classical method as a :class:`medseg.segmenters.Segmenter`; its fields are its parameters.

    Subclasses set ``method`` and implement ``_labels(image) -> ndarray``
    (unsigned labels on the image's grid). Construction validates the
    parameters and raises :class:`medseg.errors.ConfigError` naming the one at fault.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: ClassVar[str] = ""
    spatial_dims: ClassVar[int | None] = None
    in_channels: ClassVar[int | None] = 1
    postprocess: ClassVar[Mapping[str, Any] | None] = None
    label_names: ClassVar[Mapping[int, str]] = {1: "foreground"}

    def __init__(self, **params: Any) -> None:
        try:
            super().__init__(**params)
        except ValidationError as exc:
            raise ConfigError(_message(self.method, exc)) from exc

    @property
    def name(self) -> str:
        """The canonical spec, ``classical:NAME[:key=value,...]`` with the parameters that differ from the defaults."""
        changed = [
            f"{key}={_render(value)}"
            for key, value in self.model_dump().items()
            if value is not None and value != type(self).model_fields[key].get_default()
        ]
        return f"{SCHEME}:{self.method}" + (":" + ",".join(changed) if changed else "")

    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of the method, every parameter (defaults included) and the algorithm version."""
        payload = {"method": self.method, "params": self.model_dump(mode="json"), "version": ALGORITHM_VERSION}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def segment(self, image: Image) -> LabelMap:
        """The label map of ``image`` on its exact grid.

        Raises
        ------
        medseg.errors.GeometryError
            The image has a dimensionality or channel count the method does not take.
        medseg.errors.ConfigError
            A parameter does not fit the image (a seed outside it, a physical
            length on an image without known spacing, ...), naming the image's file.
        """
        if self.spatial_dims is not None and image.ndim != self.spatial_dims:
            raise GeometryError(f"{self.name} segments {self.spatial_dims}D images, this one is {image.ndim}D", image.source)
        if self.in_channels is not None and image.n_channels != self.in_channels:
            raise GeometryError(
                f"{self.name} needs {self.in_channels} channel(s), the image has {image.n_channels}", image.source
            )
        labels = np.asarray(self._labels(image))
        if labels.dtype == bool:
            labels = labels.view(np.uint8)
        else:  # the smallest unsigned type: instance maps of 2D pictures stay writable as 16-bit PNG
            smallest = np.min_scalar_type(max(int(labels.max(initial=0)), 0))
            if labels.dtype != smallest:
                labels = labels.astype(smallest)
        return image.with_labels(labels, dict(self.label_names))

    def _labels(self, image: Image) -> np.ndarray:
        raise NotImplementedError


def register(cls: type[ClassicalSegmenter]) -> type[ClassicalSegmenter]:
    """Class decorator: make ``cls`` reachable as ``classical:<cls.method>``."""
    METHODS[cls.method] = cls
    return cls


# ---- shared helpers of the method modules ------------------------------------------------------


def voxel_indices(image: Image, points: Sequence[Sequence[float]], what: str = "seed") -> np.ndarray:
    """``(n, ndim)`` nearest voxel indices of world points (LPS mm), checked to lie inside ``image``.

    Raises
    ------
    medseg.errors.ConfigError
        A point with the wrong number of coordinates or outside the image, naming it and the file.
    """
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    if pts.shape[1] != image.ndim:
        raise ConfigError(f"{what}s need {image.ndim} coordinates (mm) for this {image.ndim}D image, got {pts.shape[1]}",
                          image.source)
    index = np.rint(image.world_to_index(pts)).astype(np.int64)
    for point, idx in zip(pts, index, strict=True):
        if (idx < 0).any() or (idx >= np.array(image.shape)).any():
            raise ConfigError(
                f"{what} at ({', '.join(f'{c:g}' for c in point)}) mm lies outside the image "
                f"(voxel {tuple(idx.tolist())}, image {'x'.join(map(str, image.shape))} voxels)",
                image.source,
            )
    return index


def to_sitk_scalar(image: Image, array: np.ndarray | None = None) -> Any:
    """``array`` (default: the image's voxels) on ``image``'s grid as a ``SimpleITK.Image``."""
    from medseg.io.sitk import to_sitk

    return to_sitk(image if array is None else image.with_array(array))


def from_sitk_array(img: Any) -> np.ndarray:
    """The voxels of a ``SimpleITK.Image`` in medseg's ``[i, j, k]`` order (a transposed view, no copy)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img)
    return arr.transpose(tuple(reversed(range(arr.ndim))))


def scalar_voxels(image: Image) -> np.ndarray:
    """The voxels of a single-channel image as float32 (the input of the filters that smooth or cluster)."""
    return np.asarray(image.array, dtype=np.float32)
