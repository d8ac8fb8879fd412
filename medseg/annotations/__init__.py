"""Polygon annotations in and out: COCO, QuPath GeoJSON, LabelMe and CVAT for images 1.1.

Every format stores pixel coordinates with ``x`` the column and ``y`` the row
(medseg's ``array[x, y]``), pixel ``(0, 0)`` covering ``[0, 1] x [0, 1]`` with
its centre at ``(0.5, 0.5)``; a polygon covers the pixels whose centre it
contains (see :mod:`medseg.annotations.polygons` for the exact rule and how it
relates to pycocotools and scikit-image). Masks become polygons by tracing
pixel edges, so writing and reading back gives the same pixels.

* :func:`read_annotations` -- an annotation file as a 2D instance map
  (:class:`~medseg.io.image.LabelMap`: object ``k`` of the file has value
  ``k``, ``label_names`` its class), or with ``classes`` as a class map;
* :func:`load_annotation_labels` -- the same on an image's grid, checked
  against the image size (a ``dataset.json`` label given as an annotation file);
* :func:`write_annotations` -- every non-zero value of a 2D label map as one
  object, in any of the four formats;
* :func:`mask_to_polygons`, :func:`polygons_to_mask`, :func:`labels_to_polygons`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg._files import read_json
from medseg.annotations import coco, cvat, geojson, labelme
from medseg.annotations.objects import AnnotatedImage, check_size, drawing, file_name, rasterise
from medseg.annotations.polygons import labels_to_polygons, mask_to_polygons, polygons_to_mask
from medseg.errors import AnnotationError, GeometryError, LabelError
from medseg.io.image import Image, LabelMap
from medseg.labelmap import label_values

FORMATS = ("coco", "geojson", "labelme", "cvat")
_WRITERS = {"coco": coco.write, "geojson": geojson.write, "labelme": labelme.write, "cvat": cvat.write}
_OPTIONS: dict[str, tuple[str, ...]] = {
    "coco": ("segmentation",),
    "geojson": ("object_type",),
    "labelme": (),
    "cvat": (),
}
_JSON_READERS = {"coco": coco.read, "geojson": geojson.read, "labelme": labelme.read}
#: per-object properties carried from a file read to a file written (not measurements, which may no longer hold)
_CARRIED = ("id", "iscrowd", "object_type", "color")


def _suffix_format(path: str | os.PathLike[str]) -> str | None:
    name = Path(path).name.lower()
    return "cvat" if name.endswith(".xml") else "geojson" if name.endswith(".geojson") else None


def _json_format(data: Any, path: str | os.PathLike[str]) -> str:
    """The format of a parsed JSON annotation file, told by its layout."""
    if isinstance(data, list) or (isinstance(data, dict) and data.get("type") in ("FeatureCollection", "Feature")):
        return "geojson"
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        return "coco"
    if isinstance(data, dict) and "shapes" in data:
        return "labelme"
    raise AnnotationError("not a COCO, GeoJSON or LabelMe file (no images+annotations, features or shapes)", path)


ANNOTATION_SUFFIXES = (".json", ".geojson", ".xml")
"""Suffixes of the annotation files medseg reads (COCO/LabelMe/GeoJSON ``.json``, ``.geojson``, CVAT ``.xml``)."""


def is_annotation_file(path: str | os.PathLike[str]) -> bool:
    """True for a path whose suffix is an annotation file's (the content decides the format)."""
    return Path(path).name.lower().endswith(ANNOTATION_SUFFIXES)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of an annotation file: ``.xml`` is CVAT, ``.geojson`` GeoJSON, ``.json`` by its content."""
    return _suffix_format(path) or _json_format(read_json(path, "annotation file", error=AnnotationError), path)


def _read(path: str | os.PathLike[str], format: str | None) -> list[AnnotatedImage]:
    if format is not None and format not in FORMATS:
        raise AnnotationError(f"unknown annotation format {format!r} (known: {', '.join(FORMATS)})", path)
    if not Path(path).is_file():
        raise AnnotationError("no such file", path)
    fmt = format or _suffix_format(path)
    if fmt == "cvat":
        return cvat.read(path)
    data = read_json(path, "annotation file", error=AnnotationError)
    return _JSON_READERS[fmt or _json_format(data, path)](data, path)


def _choose(
    images: list[AnnotatedImage], image: str | int | None, like: Image | None, path: str | os.PathLike[str]
) -> AnnotatedImage:
    """The image entry asked for (by id or file name), else the only one, else the one named like ``like``'s file."""
    if image is not None:
        hits = [im for im in images if str(image) in (str(im.image_id), im.image_name, file_name(im.image_name or ""))]
    elif len(images) == 1:
        hits = images
    else:
        want = file_name(like.source) if like is not None and like.source else None
        hits = [im for im in images if want and file_name(im.image_name or "") == want]
    if len(hits) == 1:
        return hits[0]
    names = ", ".join(repr(im.image_name) for im in images[:5]) + (", ..." if len(images) > 5 else "")
    what = f"no image {image!r}" if image is not None else f"{len(images)} images ({names}); choose one with image="
    raise AnnotationError(what if images else "the file describes no image", path)


def _extent(image: AnnotatedImage) -> tuple[int, int]:
    """(width, height) covering every object, for files that state no image size."""
    hi = [0, 0]
    for obj in image.objects:
        for p in obj.polygons:
            hi = [max(hi[0], int(np.ceil(p.bounds[2]))), max(hi[1], int(np.ceil(p.bounds[3])))]
        for b in obj.bitmaps:
            hi = [max(hi[0], b.x0 + b.mask.shape[0]), max(hi[1], b.y0 + b.mask.shape[1])]
    return max(hi[0], 1), max(hi[1], 1)


def read_annotations(
    path: str | os.PathLike[str],
    like: Image | None = None,
    *,
    format: str | None = None,
    image: str | int | None = None,
    classes: Mapping[str, int] | None = None,
    repair: bool = False,
) -> LabelMap:
    """Rasterise the objects an annotation file gives one image.

    Parameters
    ----------
    path : path-like
        A COCO, QuPath GeoJSON or LabelMe ``.json``/``.geojson`` file or a CVAT
        for images 1.1 ``.xml`` file.
    like : Image, optional
        The image the annotations belong to (2D): the result lies on its grid,
        and a file that states another image size is refused. Without it the
        grid is the stated size (GeoJSON: the objects' extent) with unknown spacing.
    format : str, optional
        ``"coco"``, ``"geojson"``, ``"labelme"`` or ``"cvat"``; default from the
        suffix and the content.
    image : str or int, optional
        Which image of a COCO or CVAT file holding several: its id or file
        name. Default: the only one, or the one named like ``like``'s file.
    classes : mapping str -> int, optional
        Class name -> label value: return a class map instead of an instance map.
    repair : bool
        Fix invalid (self-intersecting) polygons with ``shapely.make_valid``,
        with a warning, instead of refusing them.

    Returns
    -------
    LabelMap
        ``array[x, y]``: the ``k``-th object (file order; CVAT by ``z_order``
        first, later objects on top) has value ``k`` and ``label_names[k]`` its
        class, or with ``classes`` the class's value. ``meta["annotations"]``
        holds ``format``, ``values`` (``"instances"`` or ``"classes"``),
        ``file``, ``image``, ``categories`` (id -> name) and ``objects``
        (object number -> ``label``, ``name`` and what the format adds: ``id``,
        ``iscrowd``, ``object_type``, ``measurements``, ``color``).

    Raises
    ------
    medseg.errors.AnnotationError
        Unreadable file, unknown category id, invalid polygon, a class missing
        from ``classes``; the message names the file and the object.
    medseg.errors.GeometryError
        The file states an image size other than ``like``'s.
    """
    chosen = _choose(_read(path, format), image, like, path)
    if like is not None:
        if like.ndim != 2:
            raise GeometryError(f"annotations are 2D; the image has shape {like.shape}", path)
        check_size(chosen, like.shape, path)
        width, height = like.shape
    else:
        width, height = chosen.size or _extent(chosen)
    instances, notes = rasterise(chosen, (width, height), path, repair)
    objects = {k: {"label": o.label, "name": o.name, **o.properties} for k, o in enumerate(chosen.objects, start=1)}
    names = {k: o["label"] for k, o in objects.items()}
    array: np.ndarray = instances
    if classes is not None:
        lut = np.zeros(len(objects) + 1, np.int64)
        for k, o in objects.items():
            if o["label"] not in classes:
                known = ", ".join(map(repr, classes)) or "none"
                raise AnnotationError(f"{o['name']} has class {o['label']!r}, not among the classes {known}", path)
            lut[k] = classes[o["label"]]
        array = label_values(lut[instances], str(path))
        names = {int(v): n for n, v in classes.items() if int(v) != 0}
    meta = {
        "format": chosen.format,
        "values": "instances" if classes is None else "classes",
        "file": str(path),
        "image": chosen.image_name,
        "categories": dict(chosen.categories)
        or (names if classes is not None else dict(enumerate(dict.fromkeys(names.values()), start=1))),
        "objects": objects,
    }
    base = like if like is not None else Image(np.zeros((width, height), np.uint8), spacing_known=False)
    return base.with_labels(array, names, meta={**base.meta, "annotations": meta}, warnings=notes, source=str(path))


def load_annotation_labels(
    path: str | os.PathLike[str], like: Image, classes: Mapping[str, int] | None = None, repair: bool = False
) -> LabelMap:
    """An annotation file as a label map on ``like``'s grid (a ``dataset.json`` label); see :func:`read_annotations`."""
    return read_annotations(path, like, classes=classes, repair=repair)


def _class_names(
    labels: Image | np.ndarray, values: np.ndarray, class_names: Mapping[int, str] | str | None
) -> dict[int, str]:
    present = [int(v) for v in np.unique(values) if v != 0]
    if isinstance(class_names, str):
        return dict.fromkeys(present, class_names)
    if class_names is not None:
        missing = [v for v in present if v not in class_names]
        if missing:
            raise LabelError(f"label values {missing[:5]} have no name in class_names", getattr(labels, "source", None))
        return {v: str(class_names[v]) for v in present}
    own = getattr(labels, "label_names", {}) or {}
    return {v: own.get(v, str(v)) for v in present}


def write_annotations(
    labels: Image | np.ndarray,
    path: str | os.PathLike[str],
    format: str | None = None,
    class_names: Mapping[int, str] | str | None = None,
    *,
    simplify_px: float = 0.0,
    image_name: str | None = None,
    **options: Any,
) -> Path:
    """Write every non-zero value of a 2D label map as one object of an annotation file, atomically.

    Parameters
    ----------
    labels : Image or ndarray
        ``[x, y]`` label map: an instance map (one value per object) or a class
        map (one object per class, possibly in several parts).
    path : path-like
        The file; ``.xml`` is written as CVAT and ``.geojson`` as GeoJSON,
        ``.json`` needs ``format``.
    format : str, optional
        ``"coco"``, ``"geojson"``, ``"labelme"`` or ``"cvat"``.
    class_names : mapping int -> str, or str, optional
        The class of each value, or one class for all; default the label
        map's ``label_names`` (as :func:`read_annotations` sets them), else the value.
    simplify_px : float
        Douglas-Peucker tolerance of the polygons in pixels (0: exact pixel edges).
    image_name : str, optional
        The image file name recorded (default: the one read, else the label
        map's file name).
    **options
        ``segmentation="rle"`` (COCO: every object as RLE), ``object_type``
        (GeoJSON: ``"annotation"``, ``"detection"``, ...).

    Returns
    -------
    Path
        The file written.

    Category ids are those of the file the labels were read from; else a map
    in which every value has its own class keeps the values as ids, and
    otherwise classes are numbered 1.. in order of their smallest value.
    """
    target = Path(path)
    fmt = format or _suffix_format(target)
    if fmt not in FORMATS:
        raise AnnotationError(
            f"say which format to write (format= one of {', '.join(FORMATS)})"
            if fmt is None
            else f"unknown annotation format {fmt!r} (known: {', '.join(FORMATS)})",
            target,
        )
    array = labels.array if isinstance(labels, Image) else np.asarray(labels)
    source = labels.source if isinstance(labels, Image) else None
    if array.ndim != 2 or (isinstance(labels, Image) and labels.channel_axis):
        raise LabelError(f"annotation files hold 2D label maps, got shape {array.shape}", source)
    values = label_values(array, source)
    read_meta = labels.meta.get("annotations", {}) if isinstance(labels, Image) else {}
    categories = read_meta.get("categories") or {}
    objects = read_meta.get("objects", {}) if read_meta.get("values") == "instances" else {}
    carried = {v: {k: o[k] for k in _CARRIED if o.get(k) is not None} for v, o in objects.items()}
    name = image_name or read_meta.get("image") or (file_name(source) if source else target.stem + ".png")
    drawn = drawing(
        values,
        _class_names(labels, values, class_names),
        name,
        simplify_px,
        {n: int(i) for i, n in categories.items()} or None,
        carried,
    )
    unknown = set(options) - set(_OPTIONS[fmt])
    if unknown:
        allowed = ", ".join(_OPTIONS[fmt]) or "none"
        raise AnnotationError(f"{fmt} files take no option {', '.join(sorted(unknown))} (options: {allowed})", target)
    _WRITERS[fmt](drawn, target, **options)
    return target


__all__ = [
    "ANNOTATION_SUFFIXES",
    "FORMATS",
    "detect_format",
    "is_annotation_file",
    "labels_to_polygons",
    "load_annotation_labels",
    "mask_to_polygons",
    "polygons_to_mask",
    "read_annotations",
    "write_annotations",
]
