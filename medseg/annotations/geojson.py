"""QuPath GeoJSON: a FeatureCollection of annotation, detection or cell objects.

Coordinates are full-resolution (level 0) pixels, ``x`` the column and ``y``
the row, pixel ``(0, 0)`` covering ``[0, 1] x [0, 1]``; polygons may have holes
and an object may be a MultiPolygon. Each feature carries ``properties``:
``objectType`` (``"annotation"``, ``"detection"``, ``"cell"``),
``classification`` (``{"name", "color": [r, g, b]}``; QuPath 0.2's
``colorRGB`` and derived ``names`` are read too) and ``measurements`` (a map,
or QuPath 0.2's list of ``{name, value}``). Features without a polygon (points,
lines) are skipped; a cell's ``geometry`` is its cell boundary.

medseg writes one feature per label value: a UUID ``id`` (stable for a given
image name and value), closed rings with the exterior counterclockwise in
``(x, y)`` (positive signed area) and holes the other way, ``objectType``
``"annotation"`` unless asked otherwise, and the class name with a colour.
:class:`FeatureWriter` streams any number of features (a slide's detections,
with their ``measurements``) to a file in constant memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
from shapely.geometry import MultiPolygon, Polygon

from medseg._gc import collector_paused
from medseg.annotations.objects import AnnotatedImage, AnnotatedObject, Drawing, ring
from medseg.atomic import atomic_path, write_text_atomic
from medseg.errors import AnnotationError

OBJECT_TYPES = ("annotation", "detection", "cell", "tile")


def _features(data: Any, path: str | os.PathLike[str]) -> list[Any]:
    if isinstance(data, list):
        return data
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "FeatureCollection" and isinstance(data.get("features"), list):
        return data["features"]
    if kind == "Feature":
        return [data]
    if kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
        return [{"type": "Feature", "geometry": data}]
    raise AnnotationError("a GeoJSON file needs a FeatureCollection, a Feature or a list of features", path)


def _polygons(geometry: Any, where: str, path: str | os.PathLike[str]) -> list[Polygon]:
    """The polygons of a GeoJSON geometry (points and lines give none)."""
    if not isinstance(geometry, dict):
        return []
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "GeometryCollection":
        return [p for g in geometry.get("geometries") or [] for p in _polygons(g, where, path)]
    if kind not in ("Polygon", "MultiPolygon"):
        return []
    if not isinstance(coords, list) or not all(isinstance(r, list) and r for r in coords):
        raise AnnotationError(f"{where}: {kind} coordinates must be a non-empty list of rings", path)
    polys = [coords] if kind == "Polygon" else coords
    return [
        Polygon(ring(p[0], where, path), [ring(h, f"{where}, hole {k}", path) for k, h in enumerate(p[1:], start=1)])
        for p in polys
    ]


def _classification(value: Any) -> tuple[str, tuple[int, int, int] | None]:
    """Class name and colour of a QuPath classification (``""`` when unclassified)."""
    if isinstance(value, str):
        return value, None
    if not isinstance(value, dict):
        return "", None
    name = value.get("name") or ": ".join(map(str, value.get("names") or []))
    color = value.get("color")
    if isinstance(value.get("colorRGB"), int):  # packed (A)RGB of QuPath 0.2
        c = value["colorRGB"]
        color = ((c >> 16) & 255, (c >> 8) & 255, c & 255)
    return str(name), (tuple(int(v) for v in color[:3]) if isinstance(color, list | tuple) else None)  # type: ignore[misc]


def _measurements(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return {str(m.get("name")): m.get("value") for m in value if isinstance(m, dict)}
    return {}


def read(data: Any, path: str | os.PathLike[str]) -> list[AnnotatedImage]:
    """The objects of a parsed QuPath GeoJSON file (one image, size unknown)."""
    objects, skipped = [], 0
    for k, feature in enumerate(_features(data, path), start=1):
        if not isinstance(feature, dict):
            raise AnnotationError(f"feature {k} is not a GeoJSON object", path)
        props = feature.get("properties") or {}
        fid = feature.get("id", props.get("id"))
        where = f"feature {k}" + (f" (id {fid})" if fid is not None else "")
        polygons = _polygons(feature.get("geometry"), where, path)
        if not polygons:
            skipped += 1
            continue
        label, color = _classification(props.get("classification"))
        info = {"id": fid, "object_type": str(props.get("objectType", "annotation")), "color": color}
        if props.get("name"):
            info["name"] = str(props["name"])
        if props.get("measurements"):
            info["measurements"] = _measurements(props["measurements"])
        objects.append(AnnotatedObject(label, where, polygons, properties=info))
    image = AnnotatedImage("geojson", objects)
    if skipped:
        image.notes.append(f"{skipped} features without a polygon (points, lines) skipped")
    return [image]


def geometries(polygons: Sequence[MultiPolygon]) -> list[dict[str, Any]]:
    """The GeoJSON geometry of each of ``polygons``, in one vectorised pass: closed rings, exteriors
    counterclockwise, a Polygon where there is one part; integer coordinates when every vertex is a pixel corner."""
    import shapely

    if not len(polygons):
        return []
    array = np.empty(len(polygons), dtype=object)
    array[:] = list(polygons)
    oriented = shapely.orient_polygons(array, exterior_cw=False)
    _, coords, (ring_end, part_end, multi_end) = shapely.to_ragged_array(oriented)
    with collector_paused():  # a list per vertex
        points = (coords.astype(np.int64) if np.array_equal(coords, np.round(coords)) else np.round(coords, 4)).tolist()
        rings = [points[a:b] for a, b in zip(ring_end[:-1].tolist(), ring_end[1:].tolist(), strict=True)]
        parts = [rings[a:b] for a, b in zip(part_end[:-1].tolist(), part_end[1:].tolist(), strict=True)]
        return [{"type": "Polygon", "coordinates": parts[a]} if b - a == 1 else
                {"type": "MultiPolygon", "coordinates": parts[a:b]}
                for a, b in zip(multi_end[:-1].tolist(), multi_end[1:].tolist(), strict=True)]


def feature(
    polygons: MultiPolygon | Mapping[str, Any],
    fid: str,
    object_type: str,
    label: str = "",
    color: tuple[int, int, int] | None = None,
    measurements: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One QuPath feature: ``id``, geometry, ``objectType``, ``classification`` {name, color}, ``measurements`` (a map).

    ``polygons`` is the feature's MultiPolygon or its GeoJSON geometry from :func:`geometries`.
    """
    props: dict[str, Any] = {"objectType": object_type}
    if label:
        props["classification"] = {"name": label, "color": list(color or (255, 0, 0))}
    if measurements:
        props["measurements"] = measurements
    shape = polygons if isinstance(polygons, Mapping) else geometries([polygons])[0]
    return {"type": "Feature", "id": fid, "geometry": shape, "properties": props}


def write(drawing: Drawing, path: str | os.PathLike[str], object_type: str = "annotation") -> None:
    """Write one image's instances as a QuPath GeoJSON FeatureCollection."""
    check_object_type(object_type, path)
    shapes = geometries([inst.polygons for inst in drawing.instances])
    features = [
        feature(shape, inst.object_id(drawing.image_name), inst.properties.get("object_type", object_type),
                inst.label, inst.color() if inst.label else None)
        for inst, shape in zip(drawing.instances, shapes, strict=True)
    ]
    write_text_atomic(path, json.dumps({"type": "FeatureCollection", "features": features}))


def check_object_type(object_type: str, path: str | os.PathLike[str] | None = None) -> None:
    """Refuse an ``objectType`` QuPath does not know."""
    if object_type not in OBJECT_TYPES:
        raise AnnotationError(f"objectType must be one of {', '.join(OBJECT_TYPES)}, got {object_type!r}", path)


class FeatureWriter:
    """A FeatureCollection written feature by feature (any number, in constant memory), atomically on close.

    Examples
    --------
    >>> with FeatureWriter("cells.geojson") as out:  # doctest: +SKIP
    ...     out.add(feature(polygons, fid, "detection", "nucleus"))
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.count = 0
        self._atomic = atomic_path(self.path)
        self._fh: Any = None

    def __enter__(self) -> Self:
        self._fh = open(self._atomic.__enter__(), "w")
        self._fh.write('{"type": "FeatureCollection", "features": [\n')
        return self

    def add(self, item: dict[str, Any]) -> None:
        """Append one feature."""
        self._fh.write((",\n" if self.count else "") + json.dumps(item, separators=(",", ":")))
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self._fh.write("\n]}\n")
        self._fh.close()
        self._atomic.__exit__(*exc)
