"""The format-neutral annotation model the readers produce and the writers consume.

A reader turns a file into :class:`AnnotatedImage` objects (one per image the
file describes), each holding :class:`AnnotatedObject` regions: the union of
polygons (pixel-corner coordinates, see :mod:`medseg.annotations.polygons`)
and bitmaps (RLE or mask shapes). :func:`rasterise` paints them into an
instance map. A writer receives :class:`Drawing`: the :class:`Instance` of
every non-zero label value with its exact mask and its polygons.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from medseg.annotations.polygons import (
    geometry_window,
    label_crops,
    mask_to_polygons,
    polygon_parts,
    polygons_to_mask,
)
from medseg.errors import AnnotationError, GeometryError

#: colours (RGB) given to classes in order of their category id, when the labels carry none
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
)  # fmt: skip
_UUID_NAMESPACE = uuid.UUID("5d7c2f56-8a8e-4b0e-9a57-1f3b6c0e6a11")  # medseg's, for reproducible object ids


@dataclass
class Bitmap:
    """A mask region: ``mask[i, j]`` is pixel ``(x0 + i, y0 + j)``."""

    mask: np.ndarray
    x0: int = 0
    y0: int = 0


@dataclass
class AnnotatedObject:
    """One object of an annotation file: the union of its polygons and bitmaps.

    ``name`` says how messages refer to it (``"annotation 12"``, ``"feature 3"``);
    ``properties`` keeps what the format adds (``id``, ``category_id``,
    ``iscrowd``, ``object_type``, ``measurements``, ``color``, ``z_order``).
    """

    label: str
    name: str
    polygons: list[Polygon] = field(default_factory=list)
    bitmaps: list[Bitmap] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class AnnotatedImage:
    """The objects a file gives one image, with the image size it states ((width, height) px, or None).

    ``notes`` says what the reader skipped (points, lines, objects without a region).
    """

    format: str
    objects: list[AnnotatedObject]
    size: tuple[int, int] | None = None
    image_name: str | None = None
    image_id: int | str | None = None
    categories: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def ring(points: Any, where: str, path: str | os.PathLike[str]) -> np.ndarray:
    """``(n, 2)`` float vertices from a list of ``[x, y]`` pairs (or a flat ``x, y, ...`` list), checked."""
    try:
        arr = np.asarray(points, dtype=float)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{where}: coordinates are not numbers", path) from exc
    if arr.ndim == 1 and arr.size % 2 == 0:
        arr = arr.reshape(-1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise AnnotationError(f"{where}: expected [x, y] vertex pairs, got an array of shape {arr.shape}", path)
    if not np.isfinite(arr).all():
        raise AnnotationError(f"{where}: coordinates must be finite numbers", path)
    if len(arr) > 1 and np.array_equal(arr[0], arr[-1]):
        arr = arr[:-1]
    if len(np.unique(arr, axis=0)) < 3:
        raise AnnotationError(f"{where}: a polygon needs at least 3 distinct vertices, got {len(arr)}", path)
    return arr


def group_shapes(keyed: Sequence[tuple[Any, AnnotatedObject]]) -> list[AnnotatedObject]:
    """Merge objects sharing a group key (not None) into the first of them, in file order (LabelMe, CVAT groups)."""
    out: list[AnnotatedObject] = []
    first: dict[Any, AnnotatedObject] = {}
    for key, obj in keyed:
        if key is None:
            out.append(obj)
        elif key in first:
            first[key].polygons += obj.polygons
            first[key].bitmaps += obj.bitmaps
        else:
            first[key] = obj
            out.append(obj)
    return out


def _checked_parts(obj: AnnotatedObject, path: str | os.PathLike[str], repair: bool, notes: list[str]) -> list[Polygon]:
    """The object's polygons, each valid: an invalid one raises, or with ``repair`` is fixed by ``make_valid``."""
    parts = []
    for k, poly in enumerate(obj.polygons, start=1):
        if poly.is_valid:
            parts.append(poly)
            continue
        reason = shapely.is_valid_reason(poly)
        what = f"{obj.name} ({obj.label!r})" + (f", polygon {k}" if len(obj.polygons) > 1 else "")
        if not repair:
            raise AnnotationError(
                f"{what}: invalid polygon ({reason}); pass repair=True to fix it with make_valid", path
            )
        notes.append(f"{what}: invalid polygon ({reason}) repaired with shapely.make_valid")
        parts += polygon_parts(shapely.make_valid(poly))
    return parts


def _clip(b: Bitmap, shape: tuple[int, int]) -> Bitmap:
    """The part of a bitmap inside a ``shape`` image (maybe empty)."""
    x0, y0 = max(b.x0, 0), max(b.y0, 0)
    x1, y1 = min(b.x0 + b.mask.shape[0], shape[0]), min(b.y0 + b.mask.shape[1], shape[1])
    return Bitmap(b.mask[x0 - b.x0 : max(x1, x0) - b.x0, y0 - b.y0 : max(y1, y0) - b.y0].astype(bool), x0, y0)


def _region(
    parts: list[Polygon], bitmaps: list[Bitmap], shape: tuple[int, int]
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """The pixels of polygons and bitmaps united: a window of the image and the mask inside it; None if no pixel."""
    bitmaps = [c for c in (_clip(b, shape) for b in bitmaps) if c.mask.any()]
    boxes = [(slice(b.x0, b.x0 + b.mask.shape[0]), slice(b.y0, b.y0 + b.mask.shape[1])) for b in bitmaps]
    outline = geometry_window(MultiPolygon(parts), shape) if parts else None
    boxes += [outline] if outline is not None else []
    if not boxes:
        return None
    wx = slice(min(b[0].start for b in boxes), max(b[0].stop for b in boxes))
    wy = slice(min(b[1].start for b in boxes), max(b[1].stop for b in boxes))
    size = (wx.stop - wx.start, wy.stop - wy.start)
    mask = polygons_to_mask(MultiPolygon(parts), size, (wx.start, wy.start)) if parts else np.zeros(size, bool)
    for b in bitmaps:
        x, y = b.x0 - wx.start, b.y0 - wy.start
        mask[x : x + b.mask.shape[0], y : y + b.mask.shape[1]] |= b.mask
    return (wx, wy), mask


def rasterise(
    image: AnnotatedImage, shape: tuple[int, int], path: str | os.PathLike[str], repair: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Instance map ``[x, y]`` of ``shape``: object ``k`` (file order, by ``z_order`` first) has value ``k``.

    Where objects overlap, the later one wins. Returns the map and the notes
    (repairs, overlaps, objects reaching outside the image, objects covering
    no pixel centre), also issued as Python warnings.
    """
    n = len(image.objects)
    labels = np.zeros(shape, np.uint16 if n < 2**16 else np.uint32)
    notes = list(image.notes)
    order = sorted(range(n), key=lambda k: image.objects[k].properties.get("z_order", 0))
    overlap, empty, outside = 0, [], []
    for k in order:
        obj = image.objects[k]
        parts = _checked_parts(obj, path, repair, notes)
        if parts and not shapely.box(0, 0, *shape).contains(MultiPolygon(parts)):
            outside.append(obj.name)
        region = _region(parts, obj.bitmaps, shape)
        if region is None or not region[1].any():
            empty.append(obj.name)
            continue
        window, mask = region
        view = labels[window]
        overlap += int(np.count_nonzero(view[mask]))
        view[mask] = k + 1
    if overlap:
        notes.append(f"{overlap} pixels lie in more than one object; the later object (in z-order) has them")
    if outside:
        notes.append(f"{len(outside)} objects reach outside the {shape[0]}x{shape[1]} px image (only the part inside "
                     f"is rasterised): {', '.join(outside[:5])}")
    if empty:
        notes.append(f"{len(empty)} objects cover no pixel centre of the image: {', '.join(empty[:5])}")
    for note in notes:
        warnings.warn(f"{path}: {note}", stacklevel=3)
    return labels, notes


@dataclass
class Instance:
    """One label value to write: its class, its exact pixels and its polygons (pixel corners, maybe simplified)."""

    value: int
    label: str
    category_id: int
    bitmap: Bitmap
    polygons: MultiPolygon
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def has_holes(self) -> bool:
        """True when a polygon has a hole (which COCO polygons, LabelMe and CVAT polygons cannot hold)."""
        return any(len(p.interiors) for p in self.polygons.geoms)

    @property
    def area_px(self) -> int:
        """Number of pixels."""
        return int(np.count_nonzero(self.bitmap.mask))

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of the pixels in pixel corners (the bitmap is cropped to them)."""
        b = self.bitmap
        return b.x0, b.y0, b.x0 + b.mask.shape[0], b.y0 + b.mask.shape[1]

    def object_id(self, image_name: str) -> str:
        """A UUID for the object, the same each time this value of this image is written."""
        return str(self.properties.get("id") or uuid.uuid5(_UUID_NAMESPACE, f"{image_name}/{self.value}"))

    def color(self) -> tuple[int, int, int]:
        """The object's colour: the one it was read with, else its category's in :data:`PALETTE`."""
        c = self.properties.get("color")
        if c is not None:
            return int(c[0]), int(c[1]), int(c[2])
        return PALETTE[(self.category_id - 1) % len(PALETTE)]


@dataclass
class Drawing:
    """What a writer writes: the instances of one image of ``size`` (width, height) px and the categories."""

    instances: list[Instance]
    size: tuple[int, int]
    image_name: str
    categories: dict[int, str]


def drawing(
    labels: np.ndarray,
    names: Mapping[int, str],
    image_name: str,
    simplify_px: float = 0.0,
    category_ids: Mapping[str, int] | None = None,
    properties: Mapping[int, dict[str, Any]] | None = None,
) -> Drawing:
    """The instances of a ``[x, y]`` label map whose value ``v`` has class ``names[v]``.

    Category ids come from ``category_ids`` (name -> id) where given; else a
    label map in which every value has its own class keeps the values as ids
    (a semantic map), and otherwise classes are numbered 1..K in order of
    their first value.
    """
    values = [int(v) for v in np.unique(labels) if v != 0]
    classes = list(dict.fromkeys(names[v] for v in values))
    if category_ids is not None and all(c in category_ids for c in classes):
        ids = {c: int(category_ids[c]) for c in classes}
    elif len(classes) == len(values):
        ids = {names[v]: v for v in values}
    else:
        ids = {c: k for k, c in enumerate(classes, start=1)}
    instances = [
        Instance(
            value=value,
            label=names[value],
            category_id=ids[names[value]],
            bitmap=Bitmap(crop, *corner),
            polygons=mask_to_polygons(crop, simplify_px, corner),
            properties=dict((properties or {}).get(value, {})),
        )
        for value, corner, crop in label_crops(labels)
    ]
    categories = {i: c for c, i in sorted(ids.items(), key=lambda kv: kv[1])}
    return Drawing(instances, (int(labels.shape[0]), int(labels.shape[1])), image_name, categories)


def coordinate(v: float) -> int | float:
    """A vertex coordinate for a file: an int when whole (every exact pixel-corner vertex), else a float."""
    return int(v) if float(v).is_integer() else round(float(v), 4)


def vertex_list(ring_coords: Any, closed: bool) -> list[list[int | float]]:
    """``[[x, y], ...]`` of a shapely ring, with the first vertex repeated at the end when ``closed``."""
    pts = np.asarray(ring_coords, float)
    pts = pts if closed else pts[:-1]
    if np.array_equal(pts, np.round(pts)):  # pixel-corner vertices, as medseg traces them
        return pts.astype(np.int64).tolist()
    return [[coordinate(x), coordinate(y)] for x, y in pts]


def check_size(image: AnnotatedImage, shape: tuple[int, int], path: str | os.PathLike[str]) -> None:
    """Raise when the file's stated image size is not ``shape`` (columns, rows)."""
    if image.size is not None and tuple(image.size) != tuple(shape):
        name = f" ({image.image_name!r})" if image.image_name else ""
        raise GeometryError(
            f"the annotations are for a {image.size[0]}x{image.size[1]} image{name}, "
            f"the image is {shape[0]}x{shape[1]} (width x height, pixels)",
            path,
        )


def file_name(path: str | os.PathLike[str]) -> str:
    """The base name of a path as annotation files store image names."""
    return Path(str(path).replace("\\", "/")).name
