"""CVAT for images 1.1 XML: ``<image>`` elements holding polygons, boxes, ellipses and masks.

Coordinates are pixels, ``x`` the column and ``y`` the row, pixel ``(0, 0)``
covering ``[0, 1] x [0, 1]``. ``<polygon points="x,y;x,y;...">``, ``<box xtl
ytl xbr ybr>`` and ``<ellipse cx cy rx ry>`` (both with an optional
``rotation`` in degrees, clockwise on screen, about the centre) and
``<mask rle left top width height>``: runs over the inclusive pixel box, row
by row, starting with a (possibly empty) background run. Shapes with the same
label and a non-zero ``group_id`` are one object; a higher ``z_order`` is drawn
on top. Polylines, points, cuboids, skeletons and tags are skipped.

medseg writes an object without holes as polygons (several parts share the
label value as ``group_id``) and an object with holes as a ``<mask>``, with
the labels and their colours in ``<meta>``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
from shapely import affinity
from shapely.geometry import Point, Polygon, box

from medseg.annotations.objects import (
    AnnotatedImage,
    AnnotatedObject,
    Bitmap,
    Drawing,
    coordinate,
    group_shapes,
    ring,
)
from medseg.atomic import atomic_path
from medseg.errors import AnnotationError

CVAT_VERSION = "1.1"
_SKIPPED = ("polyline", "points", "cuboid", "skeleton")


def _numbers(el: ET.Element, names: tuple[str, ...], where: str, path: str | os.PathLike[str]) -> list[float]:
    try:
        values = [float(el.attrib[n]) for n in names]
    except (KeyError, ValueError) as exc:
        raise AnnotationError(f"{where}: needs numeric attributes {', '.join(names)}", path) from exc
    if not np.isfinite(values).all():
        raise AnnotationError(f"{where}: coordinates must be finite numbers", path)
    return values


def _decode_mask(el: ET.Element, where: str, path: str | os.PathLike[str]) -> Bitmap:
    left, top, width, height = (int(v) for v in _numbers(el, ("left", "top", "width", "height"), where, path))
    try:
        runs = np.array([int(v) for v in el.attrib.get("rle", "").split(",")])
    except ValueError as exc:
        raise AnnotationError(f"{where}: rle must be comma-separated integers", path) from exc
    if (runs < 0).any() or runs.sum() != width * height:
        raise AnnotationError(f"{where}: rle runs must be non-negative and cover its {width}x{height} box", path)
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)  # runs alternate background, foreground, ...
    return Bitmap(flat.reshape(height, width).T, left, top)


def _region(el: ET.Element, where: str, path: str | os.PathLike[str]) -> Polygon | Bitmap:
    if el.tag == "polygon":
        pairs = [p.split(",") for p in el.attrib.get("points", "").split(";") if p]
        return Polygon(ring(pairs, where, path))
    if el.tag == "mask":
        return _decode_mask(el, where, path)
    if el.tag == "box":
        x0, y0, x1, y1 = _numbers(el, ("xtl", "ytl", "xbr", "ybr"), where, path)
        shape = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    else:
        cx, cy, rx, ry = _numbers(el, ("cx", "cy", "rx", "ry"), where, path)
        shape = affinity.scale(Point(cx, cy).buffer(1.0, quad_segs=64), rx, ry)
    rotation = _numbers(el, ("rotation",), where, path)[0] if "rotation" in el.attrib else 0.0
    # with y pointing down, shapely's counterclockwise angle turns clockwise on screen, as CVAT's rotation does
    return affinity.rotate(shape, rotation, origin="center")


def _image(el: ET.Element, categories: dict[int, str], path: str | os.PathLike[str]) -> AnnotatedImage:
    name = el.attrib.get("name", "")
    try:
        size = (int(el.attrib["width"]), int(el.attrib["height"]))
    except (KeyError, ValueError) as exc:
        raise AnnotationError(f"CVAT image {name!r} needs integer width and height", path) from exc
    keyed: list[tuple[Any, AnnotatedObject]] = []
    skipped = 0
    for k, shape in enumerate(el, start=1):
        if shape.tag in _SKIPPED:
            skipped += 1
        if shape.tag not in ("polygon", "box", "ellipse", "mask"):
            continue
        where = f"image {name!r} {shape.tag} {k}"
        label = shape.attrib.get("label", "")
        attributes = {a.attrib.get("name", ""): a.text or "" for a in shape.findall("attribute")}
        try:
            z_order = int(shape.attrib.get("z_order", 0))
        except ValueError as exc:
            raise AnnotationError(f"{where}: z_order must be an integer", path) from exc
        props = {"z_order": z_order, "occluded": shape.attrib.get("occluded") == "1", "attributes": attributes}
        region = _region(shape, where, path)
        obj = AnnotatedObject(label, where, properties=props)
        (obj.bitmaps if isinstance(region, Bitmap) else obj.polygons).append(region)
        group = shape.attrib.get("group_id", "0")
        keyed.append((None if group in ("", "0") else (label, group), obj))
    image = AnnotatedImage("cvat", group_shapes(keyed), size, name, el.attrib.get("id"), categories)
    if skipped:
        image.notes.append(f"{skipped} shapes without an area (polylines, points, cuboids, skeletons) skipped")
    return image


def read(path: str | os.PathLike[str]) -> list[AnnotatedImage]:
    """Every ``<image>`` of a CVAT for images 1.1 file (labels numbered 1.. in the order of ``<meta>``)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise AnnotationError(f"not well-formed XML ({exc})", path) from exc
    except OSError as exc:
        raise AnnotationError(f"cannot read the file ({exc.strerror})", path) from exc
    if root.tag != "annotations":
        raise AnnotationError(f"a CVAT file has an <annotations> root, this one <{root.tag}>", path)
    names = [lab.findtext("name", "") for lab in root.iterfind("meta//labels/label")]
    categories = dict(enumerate(dict.fromkeys(names), start=1))
    return [_image(el, categories, path) for el in root.iterfind("image")]


def _points(coords: Any) -> str:
    return ";".join(f"{coordinate(x)},{coordinate(y)}" for x, y in np.asarray(coords)[:-1])


def _mask_attributes(b: Bitmap) -> dict[str, str]:
    flat = b.mask.T.ravel()  # row by row over the box
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0, *runs]
    w, h = b.mask.shape
    return {"rle": ", ".join(map(str, runs)), "left": str(b.x0), "top": str(b.y0), "width": str(w), "height": str(h)}


def write(drawing: Drawing, path: str | os.PathLike[str]) -> None:
    """Write one image's instances as a CVAT for images 1.1 XML file."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = CVAT_VERSION
    labels = ET.SubElement(ET.SubElement(ET.SubElement(root, "meta"), "task"), "labels")
    colors = {i.category_id: i.color() for i in drawing.instances}
    for cid, name in drawing.categories.items():
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        r, g, b = colors.get(cid, (128, 128, 128))
        ET.SubElement(label, "color").text = f"#{r:02x}{g:02x}{b:02x}"
        ET.SubElement(label, "type").text = "any"
        ET.SubElement(label, "attributes")
    w, h = drawing.size
    image = ET.SubElement(root, "image", id="0", name=drawing.image_name, width=str(w), height=str(h))
    for inst in drawing.instances:
        base = {"label": inst.label, "source": "manual", "occluded": "0"}
        if inst.has_holes:
            ET.SubElement(image, "mask", {**base, **_mask_attributes(inst.bitmap), "z_order": "0"})
            continue
        parts = inst.polygons.geoms
        group = {"group_id": str(inst.value)} if len(parts) > 1 else {}
        for p in parts:
            ET.SubElement(image, "polygon", {**base, "points": _points(p.exterior.coords), "z_order": "0", **group})
    ET.indent(root)
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
