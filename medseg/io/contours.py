"""Planar contours <-> pixel masks, by the DICOM RT rule: a pixel belongs when its centre is inside.

Coordinates are continuous array indices of one slice: ``x`` along array axis 0
(columns), ``y`` along axis 1 (rows); pixel ``(i, j)`` has its centre at
``(i, j)`` and its corners at half-integers.

* :func:`fill_even_odd` rasterises any number of closed polygons at once with
  the even-odd rule (a contour inside another is a hole, one inside a hole an
  island); parts outside the slice are clipped.
* :func:`trace_outlines` gives the outlines of a mask along pixel edges: one
  closed loop per outer boundary and one per hole, each a simple polygon
  (pixels touching only at a corner get separate loops), collinear vertices
  removed. No pixel centre lies on such an outline, so filling the outlines
  with :func:`fill_even_odd` gives back exactly the mask.
"""

from __future__ import annotations

import numpy as np

# corner steps of the four edge directions (right, down, left, up) in (x, y) with y pointing down
_STEP = ((1, 0), (0, 1), (-1, 0), (0, -1))


def fill_even_odd(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixels ``[x, y]`` of a ``shape`` slice whose centres are inside an odd number of ``polygons``.

    Parameters
    ----------
    polygons : list of ndarray
        Each ``(n, 2)`` vertices ``(x, y)`` in index coordinates, implicitly closed.
    shape : tuple of int
        ``(nx, ny)``.

    Returns
    -------
    ndarray of bool, shape ``(nx, ny)``
    """
    nx, ny = shape
    mask = np.zeros((ny, nx + 1), np.int32)
    edges = [np.concatenate([p, np.roll(p, -1, axis=0)], axis=1) for p in polygons if len(p) >= 3]
    if not edges:
        return np.zeros(shape, bool)
    x0, y0, x1, y1 = np.concatenate(edges).T
    low, high = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.clip(np.ceil(low), 0, ny).astype(np.int64)  # rows j with low <= j < high
    stop = np.clip(np.ceil(high), 0, ny).astype(np.int64)
    counts = np.maximum(stop - first, 0)
    edge = np.repeat(np.arange(len(x0)), counts)
    if edge.size == 0:
        return np.zeros(shape, bool)
    row = first[edge] + (np.arange(edge.size) - np.repeat(np.cumsum(counts) - counts, counts))
    t = (row - y0[edge]) / (y1[edge] - y0[edge])
    x = x0[edge] + t * (x1[edge] - x0[edge])
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    # every row is crossed an even number of times (closed polygons, half-open rows): pair them up
    start = np.clip(np.ceil(x[0::2]), 0, nx).astype(np.int64)
    end = np.clip(np.ceil(x[1::2]), 0, nx).astype(np.int64)
    np.add.at(mask, (row[0::2], start), 1)
    np.add.at(mask, (row[0::2], end), -1)
    return (np.cumsum(mask, axis=1)[:, :nx] > 0).T


def _boundary_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start corners ``(x, y)`` and directions of every pixel edge between the mask and its outside.

    Edges run clockwise around foreground pixels (y down), so holes run the other way.
    """
    padded = np.pad(mask, 1)
    fg = padded[1:-1, 1:-1]
    starts, directions = [], []
    # (neighbour offset (dx, dy), direction, start corner offset from the pixel's top-left corner)
    for (dx, dy), direction, (cx, cy) in (((0, -1), 0, (0, 0)), ((1, 0), 1, (1, 0)),
                                           ((0, 1), 2, (1, 1)), ((-1, 0), 3, (0, 1))):
        neighbour = padded[1 + dx : padded.shape[0] - 1 + dx, 1 + dy : padded.shape[1] - 1 + dy]
        xs, ys = np.nonzero(fg & ~neighbour)
        starts.append(np.stack([xs + cx, ys + cy], axis=1))
        directions.append(np.full(xs.size, direction))
    start = np.concatenate(starts)
    direction = np.concatenate(directions)
    step = np.array(_STEP)[direction]
    return start, start + step, direction


def trace_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Closed outlines ``(n, 2)`` (x, y index coordinates) of a 2D ``[x, y]`` mask: outer boundaries and holes.

    At a corner where two pixels touch diagonally the loop turns right, keeping
    such pixels in separate loops, so every loop is a simple polygon.
    """
    start, end, direction = _boundary_edges(np.asarray(mask, bool))
    if start.size == 0:
        return []
    # the edge after e leaves e's end corner; where two do (a saddle), take the right turn (direction + 1)
    width = int(start[:, 1].max(initial=0)) + 2
    order = np.argsort(start[:, 0] * width + start[:, 1], kind="stable")
    keys = (start[:, 0] * width + start[:, 1])[order]
    first = np.searchsorted(keys, end[:, 0] * width + end[:, 1])
    second = np.minimum(first + 1, len(keys) - 1)
    two = keys[second] == keys[first]
    pick_second = two & ((direction[order[second]] - direction) % 4 == 1)
    after = order[np.where(pick_second, second, first)].tolist()
    used = np.zeros(len(start), bool)
    loops = []
    for e0 in range(len(start)):
        if used[e0]:
            continue
        cycle, e = [], e0
        while not used[e]:
            used[e] = True
            cycle.append(e)
            e = after[e]
        loop = start[cycle]
        turn = np.any(np.roll(loop, -1, axis=0) - loop != loop - np.roll(loop, 1, axis=0), axis=1)
        loops.append(loop[turn] - 0.5)  # corners of pixel (i, j) are at i +- 0.5, j +- 0.5
    return loops


__all__ = ["fill_even_odd", "trace_outlines"]
