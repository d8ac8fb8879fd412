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
background passes between them (8-connected); a piece that touches itself at a
corner closes the pocket it wraps, a hole meeting its outline at that corner.
Outer rings have positive signed (shoelace) area in ``(x, y)``, holes
negative, and shapely finds every result valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon

# direction codes of unit steps along pixel edges: +x, +y, -x, -y (a left turn adds 1)
_STEPS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])


def _boundary_edges(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Start corner ``(x, y)``, direction code, owner value and owner pixel ``(x, y)`` of every pixel edge between
    two different values.

    Each edge runs with its owner (a non-zero value) on its left (in ``(x, y)``), so
    outer boundaries turn counterclockwise and holes clockwise; an edge between
    two objects appears once for each, in opposite directions. A boolean mask
    is a label map whose only value is True.
    """
    p = np.pad(labels, 1)
    left, right = p[:-1, 1:-1], p[1:, 1:-1]  # the pixels either side of the vertical edge at x = i, y in [j, j+1]
    below, above = p[1:-1, :-1], p[1:-1, 1:]  # the pixels either side of the horizontal edge at y = j
    starts, dirs, owners, pixels = [], [], [], []
    for owner, other, direction, shift, at in (
        (left, right, 1, (0, 0), (-1, 0)),  # upward (+y) from (i, j); owner pixel (i - 1, j)
        (right, left, 3, (0, 1), (0, 0)),  # downward (-y) from (i, j + 1); owner pixel (i, j)
        (above, below, 0, (0, 0), (0, 0)),  # +x from (i, j); owner pixel (i, j)
        (below, above, 2, (1, 0), (0, -1)),  # -x from (i + 1, j); owner pixel (i, j - 1)
    ):
        sel = (owner != other) & (owner != 0)
        ij = np.argwhere(sel)
        starts.append(ij + np.asarray(shift))
        pixels.append(ij + np.asarray(at))
        dirs.append(np.full(len(ij), direction))
        owners.append(owner[sel])
    return np.concatenate(starts), np.concatenate(dirs), np.concatenate(owners), np.concatenate(pixels)


def _next_edges(starts: np.ndarray, dirs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The edge a boundary walk takes after each edge: a permutation of the edges.

    From the end of an edge the walk turns left if it can, else goes straight,
    else turns right: at a corner shared by two diagonal pixels of one value it
    keeps to the pixel it is bordering (4-connectivity). A directed edge is
    unique, and the next edge always has the walk's value on its left, so the
    walks of all values are traced together.
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
    return nxt


def _walks(nxt: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The edges in walk order and the walk number of each (in that order).

    The walks are the cycles of the permutation ``nxt`` (``prev`` is its
    inverse); each starts at its lowest-numbered edge, and walks are numbered
    in the order of that edge. An edge's place in its walk comes from list
    ranking by pointer jumping: log2(longest walk) vectorised passes.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(nxt)
    edge = np.arange(n)
    _, cycle = connected_components(coo_matrix((np.ones(n, bool), (edge, nxt)), shape=(n, n)), connection="weak")
    first = np.full(int(cycle.max()) + 1, n)
    np.minimum.at(first, cycle, edge)
    succ = nxt.copy()
    last = prev[first]
    succ[last] = last  # each cycle cut before its first edge: a list that ends at `last`
    to_end = (succ != edge).astype(np.int64)  # steps to `last`
    while True:
        jump = succ[succ]
        if np.array_equal(jump, succ):
            break
        to_end += to_end[succ]
        succ = jump
    number = np.empty(len(first), np.int64)
    number[np.argsort(first)] = np.arange(len(first))
    order = np.lexsort((-to_end, number[cycle]))
    return order, number[cycle[order]]


def _rings(starts: np.ndarray, dirs: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The corner vertices of every boundary ring (rings consecutive), the ring of each vertex, and the first edge
    of the walk each ring comes from.

    A vertex is the start of an edge that changes direction. A walk that passes
    a corner twice (a piece that touches itself there) is split into rings that
    pass every corner once: the vertices from the first visit up to the second
    form a loop (less the loops nested in it), and the second visit stays in
    the enclosing ring. The loops of a walk nest (a boundary never crosses
    itself), so a vertex's ring is the loop opened last at its nesting depth.
    """
    nxt = _next_edges(starts, dirs, shape)
    prev = np.empty_like(nxt)
    prev[nxt] = np.arange(len(nxt))
    order, walk = _walks(nxt, prev)
    first_edge = order[np.r_[True, walk[1:] != walk[:-1]]]
    corner = (dirs != dirs[prev])[order]
    vertices, walk = starts[order[corner]], walk[corner]
    n = len(walk)
    vid = vertices[:, 0] * (shape[1] + 1) + vertices[:, 1]
    by_vertex = np.lexsort((vid, walk))
    twice = (vid[by_vertex][1:] == vid[by_vertex][:-1]) & (walk[by_vertex][1:] == walk[by_vertex][:-1])
    if not twice.any():
        return vertices, walk, first_edge
    opens, closes = by_vertex[:-1][twice], by_vertex[1:][twice]  # the two visits of each corner passed twice
    depth = np.cumsum(np.bincount(opens, minlength=n) - np.bincount(closes, minlength=n))
    open_keys = np.sort(depth[opens] * n + opens)

    def opener(level: np.ndarray, position: np.ndarray) -> np.ndarray:
        """The loop opened last at nesting ``level`` up to ``position``."""
        return open_keys[np.searchsorted(open_keys, level * n + position, side="right") - 1] % n

    if not np.array_equal(opener(depth[closes] + 1, closes), opens):  # by construction; guard the nesting
        raise RuntimeError("a boundary walk of a label map crosses itself")
    position = np.arange(n)
    label = 2 * np.flatnonzero(np.r_[True, walk[1:] != walk[:-1]])[walk] + 1  # depth 0: the walk's outer ring
    inner = depth > 0
    label[inner] = 2 * opener(depth[inner], position[inner])
    regroup = np.lexsort((position, label))
    label = label[regroup]
    head = np.r_[True, label[1:] != label[:-1]]
    return vertices[regroup], np.cumsum(head) - 1, first_edge[walk[regroup][head]]


def _ring_areas(vertices: np.ndarray, ring: np.ndarray, n_rings: int) -> np.ndarray:
    """Signed (shoelace) area of each ring, px^2; ``ring`` numbers the rows of ``vertices`` (consecutive per ring)."""
    x, y = vertices[:, 0].astype(float), vertices[:, 1].astype(float)
    begin = np.flatnonzero(np.r_[True, ring[1:] != ring[:-1]])
    after = np.arange(1, len(ring) + 1)
    after[np.r_[begin[1:], len(ring)] - 1] = begin  # each ring closes on its first vertex
    return 0.5 * np.bincount(ring, weights=x * y[after] - x[after] * y, minlength=n_rings)


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


def _pieces(labels: np.ndarray, value: np.ndarray, is_shell: np.ndarray, owner_pixel: np.ndarray) -> np.ndarray:
    """The 4-connected piece of each ring, as numbers unique over the map: its value's when every value has one
    outer ring, else the piece of the pixel its walk's first edge borders."""
    from medseg.labelmap import label_components

    values, piece = np.unique(value, return_inverse=True)
    if np.bincount(piece, weights=is_shell, minlength=len(values)).max() <= 1:
        return piece
    return label_components(labels, 4)[0][owner_pixel[:, 0], owner_pixel[:, 1]].astype(np.int64)


def labels_to_polygons(
    labels: np.ndarray, simplify_px: float = 0.0, offset: tuple[int, int] = (0, 0)
) -> dict[int, MultiPolygon]:
    """:func:`mask_to_polygons` of every non-zero value of a 2D ``[x, y]`` label map, in ascending order.

    All outlines are traced together in vectorised passes over the map's pixel
    edges (a boolean mask gives the key 1); ``offset`` is added to every
    vertex. Each 4-connected piece of a value is one polygon: its
    counterclockwise ring is the shell, its clockwise rings are its holes.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a 2D label map is needed, got shape {labels.shape}")
    starts, dirs, owners, pixels = _boundary_edges(labels)
    if not len(dirs):
        return {}
    vertices, ring, source = _rings(starts, dirs, labels.shape)
    is_shell = _ring_areas(vertices, ring, len(source)) > 0
    value = owners[source]
    piece = _pieces(labels, value, is_shell, pixels[source])
    shells = np.bincount(piece, weights=is_shell)[np.unique(piece)]
    if not np.all(shells == 1):  # by construction; guard the invariant the assembly rests on
        raise RuntimeError("a 4-connected piece of a label map traced to other than one outer ring")
    shell_of = np.zeros(int(piece.max()) + 1, np.int64)
    shell_of[piece[is_shell]] = np.flatnonzero(is_shell)
    shell = shell_of[piece]  # the shell ring of each ring's polygon
    rank = np.lexsort((~is_shell, shell, value))  # rings by value, then polygon (in shell order), the shell first
    where = np.empty_like(rank)
    where[rank] = np.arange(len(rank))
    by_ring = np.argsort(where[ring], kind="stable")  # the vertices regrouped ring by ring in that order
    coords = (vertices[by_ring] + np.asarray(offset)).astype(float)
    counts = np.bincount(ring, minlength=len(rank))[rank]
    begin = np.r_[0, np.cumsum(counts)[:-1]]
    closed = np.insert(coords, begin + counts, coords[begin], axis=0)  # each ring ends on its first vertex
    polygon_head = np.r_[True, shell[rank][1:] != shell[rank][:-1]]
    value_head = np.r_[True, value[rank][1:] != value[rank][:-1]]
    offsets = (np.r_[0, np.cumsum(counts + 1)], np.r_[np.flatnonzero(polygon_head), len(rank)],
               np.r_[np.flatnonzero(value_head[polygon_head]), int(polygon_head.sum())])
    multis = shapely.from_ragged_array(shapely.GeometryType.MULTIPOLYGON, closed, offsets)
    keys = value[rank][value_head]
    return {int(k): _simplified(m, simplify_px) for k, m in zip(keys.tolist(), multis, strict=True)}


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
