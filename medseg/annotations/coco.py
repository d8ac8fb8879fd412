"""COCO object annotations (the ``instances_*.json`` layout): polygons and RLE.

Coordinates are pixels with ``x`` the column and ``y`` the row; pixel
``(0, 0)`` covers ``[0, 1] x [0, 1]``. An annotation's ``segmentation`` is
either a list of polygons ``[x0, y0, x1, y1, ...]`` whose union is the object
(COCO polygons hold no holes), or RLE ``{"size": [height, width], "counts":
...}``: column-major runs, compressed (a string) or not (a list), encoded and
decoded with pycocotools. ``iscrowd`` is kept per object.

medseg writes an object as polygons when it has no holes, and as compressed
RLE when it has holes, is a crowd region, or ``segmentation="rle"`` is asked
for; ``area`` is the object's pixel count and ``bbox`` ``[x, y, width, height]``
its pixels' extent. Either way pycocotools decodes exactly the written masks.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any, Literal

import numpy as np
from pycocotools import mask as mask_utils
from shapely.geometry import Polygon

from medseg.annotations.objects import AnnotatedImage, AnnotatedObject, Bitmap, Drawing, Instance, coordinate, ring
from medseg.atomic import write_text_atomic
from medseg.errors import AnnotationError


def _decode_rle(seg: dict[str, Any], size: tuple[int, int], where: str, path: str | os.PathLike[str]) -> Bitmap:
    """An RLE segmentation as a bitmap cropped to its extent, checked against the image size (width, height)."""
    width, height = size
    if list(seg.get("size", [])) != [height, width]:
        raise AnnotationError(
            f"{where}: RLE size {seg.get('size')} is not the image's [height, width] = [{height}, {width}]", path
        )
    counts = seg.get("counts")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != width * height:
            raise AnnotationError(
                f"{where}: RLE counts must be non-negative integers summing to {width * height}", path
            )
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    elif isinstance(counts, str):
        rle = {"size": [height, width], "counts": counts.encode("ascii", "replace")}
    else:
        raise AnnotationError(f"{where}: RLE counts must be a list of integers or a string", path)
    x, y, w, h = (int(v) for v in mask_utils.toBbox(rle))
    mask = mask_utils.decode(rle).T  # pycocotools gives [row, column]
    return Bitmap(mask[x : x + w, y : y + h].astype(bool), x, y)


def _object(
    ann: dict[str, Any], index: int, size: tuple[int, int], categories: dict[Any, str], path: str | os.PathLike[str]
) -> AnnotatedObject:
    where = f"annotation {ann.get('id', f'#{index}')}"
    cid = ann.get("category_id")
    if not isinstance(cid, int | str) or cid not in categories:
        known = ", ".join(map(str, categories)) or "none"
        raise AnnotationError(f"{where}: unknown category_id {cid!r} (categories: {known})", path)
    obj = AnnotatedObject(
        categories[cid],
        where,
        properties={"id": ann.get("id"), "category_id": cid, "iscrowd": int(bool(ann.get("iscrowd", 0)))},
    )
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        obj.bitmaps.append(_decode_rle(seg, size, where, path))
    elif isinstance(seg, list):
        obj.polygons = [Polygon(ring(p, f"{where}, polygon {k}", path)) for k, p in enumerate(seg, start=1)]
    elif seg is not None:
        raise AnnotationError(f"{where}: segmentation must be a list of polygons or an RLE object", path)
    return obj


def read(data: Any, path: str | os.PathLike[str]) -> list[AnnotatedImage]:
    """Every image of a parsed COCO file with its annotations (categories by id)."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AnnotationError("a COCO file needs an 'images' list", path)
    categories: dict[Any, str] = {}
    for c in data.get("categories") or []:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int | str):
            raise AnnotationError(f"COCO category {c!r} has no integer or string id", path)
        categories[c["id"]] = str(c.get("name", c["id"]))
    images: dict[Any, AnnotatedImage] = {}
    sizes: dict[Any, tuple[int, int]] = {}
    for im in data["images"]:
        key = im.get("id") if isinstance(im, dict) else None
        try:
            sizes[key] = (int(im["width"]), int(im["height"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise AnnotationError(f"COCO image {key!r} needs integer width and height", path) from exc
        images[key] = AnnotatedImage("coco", [], sizes[key], str(im.get("file_name", "")), key, categories)
    by_image: dict[Any, list[AnnotatedObject]] = defaultdict(list)
    no_region: dict[Any, list[AnnotatedObject]] = defaultdict(list)
    for index, ann in enumerate(data.get("annotations") or [], start=1):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if not isinstance(image_id, int | str) or image_id not in images:
            what = ann.get("id", f"#{index}") if isinstance(ann, dict) else f"#{index}"
            raise AnnotationError(f"annotation {what}: no image with its image_id {image_id!r}", path)
        obj = _object(ann, index, sizes[image_id], categories, path)
        (by_image if obj.polygons or obj.bitmaps else no_region)[image_id].append(obj)
    for key, im in images.items():
        im.objects = by_image[key]
        if no_region[key]:
            im.notes.append(f"{len(no_region[key])} annotations without a segmentation skipped")
    return list(images.values())


def _segmentation(instance: Instance, size: tuple[int, int], rle: bool) -> list[list[int | float]] | dict[str, Any]:
    if not rle:
        return [[coordinate(v) for v in np.asarray(p.exterior.coords)[:-1].ravel()] for p in instance.polygons.geoms]
    full = np.zeros(size, np.uint8)
    b = instance.bitmap
    full[b.x0 : b.x0 + b.mask.shape[0], b.y0 : b.y0 + b.mask.shape[1]] = b.mask
    encoded = mask_utils.encode(np.asfortranarray(full.T))  # [row, column], column-major as COCO stores it
    return {"size": [size[1], size[0]], "counts": encoded["counts"].decode("ascii")}


def write(drawing: Drawing, path: str | os.PathLike[str], segmentation: Literal["polygon", "rle"] = "polygon") -> None:
    """Write one image's instances as a COCO file (see the module notes on polygons and RLE)."""
    if segmentation not in ("polygon", "rle"):
        raise AnnotationError(f"COCO segmentation must be 'polygon' or 'rle', got {segmentation!r}", path)
    annotations = []
    for k, inst in enumerate(drawing.instances, start=1):
        crowd = int(bool(inst.properties.get("iscrowd", 0)))
        rle = segmentation == "rle" or crowd or inst.has_holes
        x0, y0, x1, y1 = inst.bbox
        annotations.append(
            {
                "id": k,
                "image_id": 1,
                "category_id": inst.category_id,
                "segmentation": _segmentation(inst, drawing.size, bool(rle)),
                "area": float(inst.area_px),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "iscrowd": crowd,
            }
        )
    data = {
        "images": [{"id": 1, "file_name": drawing.image_name, "width": drawing.size[0], "height": drawing.size[1]}],
        "categories": [{"id": i, "name": n, "supercategory": ""} for i, n in drawing.categories.items()],
        "annotations": annotations,
    }
    write_text_atomic(path, json.dumps(data))
