"""Exact conversion between masks and polygons on the pixel grid.

Conventions (the same as COCO, CVAT, QuPath and LabelMe coordinates):

* ``x`` is array axis 0 (the column), ``y`` is axis 1 (the row) of medseg's
  ``[column, row]`` 2D arrays, both in pixels;
* pixel ``[i, j]`` is the unit square ``[i, i + 1] x [j, j + 1]``: its corner
  ``(0, 0)`` is at ``(0, 0)`` and its centre at ``(i + 0.5, j + 0.5)``;
* a polygon covers a pixel when it contains the pixel's centre (holes
  excluded). A centre exactly on the boundary is inside when the interior lies
  towards larger ``x`` (or, on a horizontal edge, towards larger ``y``): an
  axis-aligned rectangle covers the centres in ``[x0, x1) x [y0, y1)``. This is
  Java2D's insideness rule, which QuPath uses; pycocotools gives the same
  pixels for polygons whose vertices are pixel corners (all that
  :func:`mask_to_polygons` writes) and differs by a few boundary pixels on
  others (it approximates edges on a 5x finer grid).
* scikit-image's ``draw.polygon`` tests integer coordinates, i.e. it puts pixel
  centres at integers: shift vertices by ``-0.5`` before giving it these
  polygons (``polygon2mask(shape, vertices - 0.5)`` matches
  :func:`polygons_to_mask`).

:func:`mask_to_polygons` traces the pixel edges between foreground and
background, so every vertex is a pixel corner and :func:`polygons_to_mask`
gives back exactly the mask (IoU 1.0). Foreground is 4-connected: pixels that
touch only at a corner are separate polygons meeting at that point, and the
background is 8-connected. Outer rings have positive signed (shoelace) area in
``(x, y)``, holes negative, and shapely finds every result valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon

# direction codes of unit steps along pixel edges: +x, +y, -x, -y (a left turn adds 1)
_STEPS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])


def _boundary_edges(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start corner ``(x, y)``, direction code and owner value of every pixel edge between two different values.

    Each edge runs with its owner (a non-zero value) on its left (in ``(x, y)``), so
    outer boundaries turn counterclockwise and holes clockwise; an edge between
    two objects appears once for each, in opposite directions. A boolean mask
    is a label map whose only value is True.
    """
    p = np.pad(labels, 1)
    left, right = p[:-1, 1:-1], p[1:, 1:-1]  # the pixels either side of the vertical edge at x = i, y in [j, j+1]
    below, above = p[1:-1, :-1], p[1:-1, 1:]  # the pixels either side of the horizontal edge at y = j
    starts, dirs, owners = [], [], []
    for owner, other, direction, shift in (
        (left, right, 1, (0, 0)),  # upward (+y) from (i, j)
        (right, left, 3, (0, 1)),  # downward (-y) from (i, j + 1)
        (above, below, 0, (0, 0)),  # +x from (i, j)
        (below, above, 2, (1, 0)),  # -x from (i + 1, j)
    ):
        sel = (owner != other) & (owner != 0)
        ij = np.argwhere(sel)
        starts.append(ij + np.asarray(shift))
        dirs.append(np.full(len(ij), direction))
        owners.append(owner[sel])
    return np.concatenate(starts), np.concatenate(dirs), np.concatenate(owners)


def _edge_cycles(starts: np.ndarray, dirs: np.ndarray, shape: tuple[int, int]) -> list[tuple[np.ndarray, int]]:
    """Closed boundary walks as arrays of corner vertices (direction changes only), each with its first edge.

    From the end of an edge the walk turns left if it can, else goes straight,
    else turns right: at a corner shared by two diagonal pixels of one value it
    keeps to the pixel it is bordering (4-connectivity). A directed edge is
    unique, and the edge a walk takes next always has the walk's value on its
    left, so the walks of all values are traced together.
    """
    n_y = shape[1] + 1
    key = (starts[:, 0] * n_y + starts[:, 1]) * 4 + dirs
    order = np.argsort(key)
    sorted_key = key[order]

    def lookup(query: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(sorted_key, query), len(sorted_key) - 1)
        return np.where(sorted_key[pos] == query, order[pos], -1)

    ends = starts + _STEPS[dirs]
    end_id = (ends[:, 0] * n_y + ends[:, 1]) * 4
    nxt = lookup(end_id + (dirs + 1) % 4)
    for turn in (0, 3):
        todo = nxt < 0
        nxt[todo] = lookup(end_id[todo] + (dirs[todo] + turn) % 4)
    follow = nxt.tolist()
    seen = [False] * len(follow)
    cycles = []
    for first in range(len(follow)):
        if seen[first]:
            continue
        walk = [first]
        seen[first] = True
        e = follow[first]
        while e != first:
            walk.append(e)
            seen[e] = True
            e = follow[e]
        idx = np.asarray(walk)
        corner = dirs[idx] != np.roll(dirs[idx], 1)
        cycles.append((starts[idx[corner]], first))
    return cycles


def _simple_rings(cycle: np.ndarray, n_y: int) -> list[np.ndarray]:
    """Split a walk that passes a corner twice into rings that each pass every corner once."""
    ids = cycle[:, 0] * n_y + cycle[:, 1]
    if len(np.unique(ids)) == len(ids):
        return [cycle]
    rings, stack, where = [], [], {}
    for k, v in enumerate(ids.tolist()):
        if v in where:  # close the loop back to the first visit of v
            at = where[v]
            loop = stack[at:]
            rings.append(cycle[loop])
            for u in loop[1:]:
                del where[int(ids[u])]
            del stack[at + 1 :]
        else:
            where[v] = len(stack)
            stack.append(k)
    rings.append(cycle[stack])
    return rings


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0].astype(float), ring[:, 1].astype(float)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _inside(point: np.ndarray, ring: np.ndarray) -> bool:
    """Even-odd test of a point against a closed ring (not on its boundary)."""
    a, b = ring, np.roll(ring, -1, axis=0)
    crosses = (a[:, 1] > point[1]) != (b[:, 1] > point[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        x = a[:, 0] + (point[1] - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    return bool(np.count_nonzero(crosses & (x > point[0])) % 2)


def _assemble(rings: list[np.ndarray]) -> list[Polygon]:
    """Polygons from oriented rings: each hole goes to the smallest outer ring around it."""
    areas = [_signed_area(r) for r in rings]
    shells = [i for i, a in enumerate(areas) if a > 0]
    holes: dict[int, list[np.ndarray]] = {i: [] for i in shells}
    for i, a in enumerate(areas):
        if a > 0:
            continue
        ring = rings[i]
        probe = ring[0] + 0.5 * np.sign(ring[1] - ring[0])  # the midpoint of a unit edge lies on no other ring
        around = [s for s in shells if len(shells) == 1 or _inside(probe, rings[s])]
        holes[min(around, key=lambda s: areas[s])].append(ring)
    return [Polygon(rings[s], holes[s]) for s in shells]


def mask_to_polygons(mask: np.ndarray, simplify_px: float = 0.0, offset: tuple[int, int] = (0, 0)) -> MultiPolygon:
    """Polygons with holes whose pixel-centre rasterisation is exactly ``mask``.

    Parameters
    ----------
    mask : ndarray of bool, shape (columns, rows)
        A 2D mask in medseg's ``[x, y]`` order.
    simplify_px : float
        Douglas-Peucker tolerance in pixels (topology preserving); 0 keeps the
        exact pixel-edge outline.
    offset : (int, int)
        Added to every vertex (the position of ``mask[0, 0]`` in a larger image).

    Returns
    -------
    shapely.MultiPolygon
        Vertices at pixel corners ``(x, y)``; empty for an empty mask.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((4, 3), bool); m[1:3, 0:2] = True
    >>> mask_to_polygons(m).wkt
    'MULTIPOLYGON (((3 0, 3 2, 1 2, 1 0, 3 0)))'
    """
    if mask.ndim != 2:
        raise ValueError(f"mask_to_polygons needs a 2D mask, got shape {mask.shape}")
    return labels_to_polygons(mask.astype(bool, copy=False), simplify_px, offset).get(1, MultiPolygon())


def _simplified(polygons: MultiPolygon, simplify_px: float) -> MultiPolygon:
    if simplify_px <= 0:
        return polygons
    out = shapely.simplify(polygons, simplify_px, preserve_topology=True)
    return out if isinstance(out, MultiPolygon) else MultiPolygon([out])


def label_crops(labels: np.ndarray) -> Iterator[tuple[int, tuple[int, int], np.ndarray]]:
    """Each non-zero value of a 2D ``[x, y]`` label map, ascending, with its bounding box's corner and its mask there."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a 2D label map is needed, got shape {labels.shape}")
    values = np.unique(labels)
    values = values[values != 0]
    if not len(values):
        return
    dense = (np.searchsorted(values, labels) + 1) * (labels != 0)  # 1..K, so that find_objects' table stays small
    for k, box in enumerate(ndimage.find_objects(dense), start=1):
        yield int(values[k - 1]), (box[0].start, box[1].start), dense[box] == k


def labels_to_polygons(
    labels: np.ndarray, simplify_px: float = 0.0, offset: tuple[int, int] = (0, 0)
) -> dict[int, MultiPolygon]:
    """:func:`mask_to_polygons` of every non-zero value of a 2D ``[x, y]`` label map, in ascending order.

    All outlines are traced in one pass over the map's pixel edges (a boolean
    mask gives the key 1); ``offset`` is added to every vertex.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a 2D label map is needed, got shape {labels.shape}")
    starts, dirs, owners = _boundary_edges(labels)
    if not len(dirs):
        return {}
    n_y = labels.shape[1] + 1
    rings: dict[int, list[np.ndarray]] = {}
    for cycle, first in _edge_cycles(starts, dirs, labels.shape):
        rings.setdefault(int(owners[first]), []).extend(r + np.asarray(offset) for r in _simple_rings(cycle, n_y))
    return {v: _simplified(MultiPolygon(_assemble(rings[v])), simplify_px) for v in sorted(rings)}


def polygon_parts(geometry: shapely.Geometry) -> list[Polygon]:
    """The polygons of a Polygon, MultiPolygon or GeometryCollection (points and lines dropped)."""
    if isinstance(geometry, Polygon):
        return [] if geometry.is_empty else [geometry]
    if hasattr(geometry, "geoms"):
        return [p for g in geometry.geoms for p in polygon_parts(g)]
    return []


def _fill_rings(rings: Iterable[np.ndarray], x0: int, y0: int, shape: tuple[int, int]) -> np.ndarray:
    """Even-odd pixel-centre fill of closed rings (``(n, 2)`` arrays, first = last) on a ``shape`` window at (x0, y0)."""
    edges = np.concatenate([np.concatenate([r[:-1], r[1:]], axis=1) for r in rings if len(r) > 1])
    edges = edges[edges[:, 1] != edges[:, 3]]
    lower = edges[:, 1] < edges[:, 3]  # orient every edge upwards, so both traversals of an edge give the same x
    xa, ya = np.where(lower, edges[:, 0], edges[:, 2]) - x0, np.where(lower, edges[:, 1], edges[:, 3]) - y0
    xb, yb = np.where(lower, edges[:, 2], edges[:, 0]) - x0, np.where(lower, edges[:, 3], edges[:, 1]) - y0
    first = np.clip(np.ceil(ya - 0.5), 0, shape[1]).astype(np.int64)  # rows whose centre y satisfies ya <= y < yb
    stop = np.clip(np.ceil(yb - 0.5), 0, shape[1]).astype(np.int64)
    count = np.maximum(stop - first, 0)
    owner = np.repeat(np.arange(len(count)), count)
    row = first[owner] + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    x = xa[owner] + (row + 0.5 - ya[owner]) * (xb[owner] - xa[owner]) / (yb[owner] - ya[owner])
    col = np.clip(np.ceil(x - 0.5), 0, shape[0]).astype(np.int64)  # centres at or right of the crossing toggle
    toggles = np.bincount(col * shape[1] + row, minlength=(shape[0] + 1) * shape[1]).reshape(shape[0] + 1, shape[1])
    return (np.cumsum(toggles, axis=0)[:-1] % 2).astype(bool)


def polygons_to_mask(
    geometry: shapely.Geometry, shape: tuple[int, int], offset: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Pixels whose centre lies in ``geometry`` (see the module conventions), as a ``[x, y]`` mask.

    Parameters
    ----------
    geometry : shapely Polygon, MultiPolygon or GeometryCollection
        In pixel coordinates; the parts of a multi-geometry are united (they
        may overlap), each part's holes are excluded.
    shape : (int, int)
        ``(columns, rows)`` of the mask.
    offset : (int, int)
        Pixel position of ``mask[0, 0]`` (to rasterise into a window).

    Examples
    --------
    >>> from shapely.geometry import Polygon
    >>> int(polygons_to_mask(Polygon([(0, 0), (0, 9), (9, 9), (9, 0)]), (20, 20)).sum())
    81
    """
    out = np.zeros(shape, bool)
    for part in polygon_parts(geometry):
        rings = [np.asarray(r.coords, float) for r in (part.exterior, *part.interiors)]
        out |= _fill_rings(rings, offset[0], offset[1], shape)
    return out


def geometry_window(geometry: shapely.Geometry, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """The slices of a ``shape`` grid whose pixel centres may fall in ``geometry``; None when none can."""
    if geometry.is_empty:
        return None
    x0, y0, x1, y1 = geometry.bounds
    lo = (max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0))
    hi = (min(int(np.ceil(x1)), shape[0]), min(int(np.ceil(y1)), shape[1]))
    if hi[0] <= lo[0] or hi[1] <= lo[1]:
        return None
    return slice(lo[0], hi[0]), slice(lo[1], hi[1])
