"""LabelMe JSON: one image's ``shapes`` (polygon, rectangle, circle, mask).

Points are ``[x, y]`` pixels with pixel ``(0, 0)`` covering ``[0, 1] x [0, 1]``,
as LabelMe's canvas shows them (its own ``shape_to_mask`` draws with Pillow,
which puts pixel centres at integer coordinates and adds the outline: up to
half a pixel more all round). Shapes with the same ``label`` and a
``group_id`` are one object. A ``mask`` shape holds a base64 PNG of the
inclusive pixel box ``points = [[x1, y1], [x2, y2]]``. Points, lines and
line strips are skipped.

medseg writes an object without holes as one polygon shape per part (parts
share the object's label value as ``group_id``), and an object with holes as
a ``mask`` shape (LabelMe >= 5.4 reads those).
"""

from __future__ import annotations

import base64
import io
import json
import os
from typing import Any

import numpy as np
from PIL import Image as PILImage
from shapely.geometry import Point, Polygon, box

from medseg.annotations.objects import AnnotatedImage, AnnotatedObject, Bitmap, Drawing, group_shapes, ring, vertex_list
from medseg.atomic import write_text_atomic
from medseg.errors import AnnotationError

LABELME_VERSION = "5.5.0"  # the file layout written (mask shapes need >= 5.4)


def _mask_shape(shape: dict[str, Any], points: np.ndarray, where: str, path: str | os.PathLike[str]) -> Bitmap:
    (x1, y1), (x2, y2) = points.astype(int)
    try:
        png = PILImage.open(io.BytesIO(base64.b64decode(shape.get("mask") or "", validate=True)))
        mask = np.asarray(png).astype(bool)
    except (ValueError, OSError) as exc:
        raise AnnotationError(f"{where}: 'mask' is not a base64-encoded PNG", path) from exc
    mask = mask if mask.ndim == 2 else mask.any(axis=-1)
    if mask.shape != (y2 - y1 + 1, x2 - x1 + 1):
        raise AnnotationError(f"{where}: mask of {mask.shape[1]}x{mask.shape[0]} px does not fill its box", path)
    return Bitmap(mask.T, x1, y1)


def _shape(shape: Any, k: int, path: str | os.PathLike[str]) -> AnnotatedObject | None:
    """The region of one LabelMe shape; None for shapes without an area."""
    where = f"shape {k}"
    if not isinstance(shape, dict):
        raise AnnotationError(f"{where} is not a JSON object", path)
    kind = shape.get("shape_type") or "polygon"
    obj = AnnotatedObject(str(shape.get("label", "")), where, properties={"group_id": shape.get("group_id")})
    if kind == "polygon":
        obj.polygons.append(Polygon(ring(shape.get("points"), where, path)))
        return obj
    if kind not in ("rectangle", "circle", "mask"):
        return None
    try:
        points = np.asarray(shape.get("points"), dtype=float).reshape(2, 2)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{where}: a {kind} needs two [x, y] points", path) from exc
    if not np.isfinite(points).all():
        raise AnnotationError(f"{where}: coordinates must be finite numbers", path)
    if kind == "rectangle":
        obj.polygons.append(box(*points.min(axis=0), *points.max(axis=0)))
    elif kind == "circle":  # centre and a point on the circle; 256 segments, within 1e-4 radius of the circle
        obj.polygons.append(Point(points[0]).buffer(float(np.hypot(*(points[1] - points[0]))), quad_segs=64))
    else:
        obj.bitmaps.append(_mask_shape(shape, points, where, path))
    return obj


def read(data: Any, path: str | os.PathLike[str]) -> list[AnnotatedImage]:
    """The objects of a parsed LabelMe file, with the image size and name it states."""
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise AnnotationError("a LabelMe file needs a 'shapes' list", path)
    keyed, skipped = [], 0
    for k, shape in enumerate(data["shapes"], start=1):
        obj = _shape(shape, k, path)
        if obj is None:
            skipped += 1
            continue
        group = obj.properties["group_id"]
        keyed.append((None if group is None else (obj.label, group), obj))
    w, h = data.get("imageWidth"), data.get("imageHeight")
    size = (int(w), int(h)) if isinstance(w, int) and isinstance(h, int) else None
    image = AnnotatedImage("labelme", group_shapes(keyed), size, data.get("imagePath"))
    if skipped:
        image.notes.append(f"{skipped} shapes without an area (points, lines) skipped")
    return [image]


def _png_base64(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    PILImage.fromarray(mask).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write(drawing: Drawing, path: str | os.PathLike[str]) -> None:
    """Write one image's instances as a LabelMe file (no image data embedded)."""
    shapes = []
    for inst in drawing.instances:
        base = {"label": inst.label, "description": "", "flags": {}}
        if inst.has_holes:
            b = inst.bitmap
            corners = [[b.x0, b.y0], [b.x0 + b.mask.shape[0] - 1, b.y0 + b.mask.shape[1] - 1]]
            shapes.append(
                {**base, "points": corners, "group_id": None, "shape_type": "mask", "mask": _png_base64(b.mask.T)}
            )
            continue
        parts = inst.polygons.geoms
        group = inst.value if len(parts) > 1 else None
        for p in parts:
            points = vertex_list(p.exterior.coords, closed=False)
            shapes.append({**base, "points": points, "group_id": group, "shape_type": "polygon", "mask": None})
    data = {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": drawing.image_name,
        "imageData": None,
        "imageHeight": drawing.size[1],
        "imageWidth": drawing.size[0],
    }
    write_text_atomic(path, json.dumps(data))
