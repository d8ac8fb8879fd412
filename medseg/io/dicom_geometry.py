"""Geometry of stacked DICOM planes: sorting along the slice normal, spacing, tilt, gaps.

:func:`stack_planes` turns the :class:`~medseg.io.dicom_frames.Plane` records
of one series (or one multi-frame file) into a :class:`Grid`: the planes in
slice order plus the spacing, origin and direction of the Image they form,
and the warnings a reader must pass on (unknown spacing, non-uniform spacing,
gantry tilt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medseg.errors import SeriesError
from medseg.io.dicom_frames import Plane

POSITION_TOL_MM = 0.01  # positions closer than this are the same; deviations beyond it are reported


@dataclass
class Grid:
    """Where sorted planes sit in the world: the geometry of the Image they form."""

    planes: list[Plane]
    ndim: int
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray
    spacing_known: bool
    spacing_source: str
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        first = self.planes[0]
        return (first.columns, first.rows, len(self.planes))[: self.ndim]


def geometry_key(plane: Plane) -> tuple[Any, ...]:
    """What planes of one stack must share: size, orientation (1e-3), pixel spacing (1e-4 mm), samples."""
    orient = None if plane.orientation is None else tuple(np.round(plane.orientation, 3))
    spacing = None if plane.pixel_spacing is None else tuple(np.round(plane.pixel_spacing, 4))
    return (plane.rows, plane.columns, orient, spacing, int(plane.ds.get("SamplesPerPixel", 1) or 1))


def in_plane_spacing(plane: Plane) -> tuple[tuple[float, float], bool]:
    """(x, y) spacing in mm and whether it is known."""
    if plane.pixel_spacing is None or min(plane.pixel_spacing) <= 0:
        return (1.0, 1.0), False
    row_gap, col_gap = plane.pixel_spacing
    return (float(col_gap), float(row_gap)), True


def stack_planes(planes: list[Plane], source: Path) -> Grid:
    """Sort ``planes`` into a volume and compute its geometry.

    Raises
    ------
    medseg.errors.SeriesError
        When two different planes share one position.
    """
    first = planes[0]
    if len({(*geometry_key(p), p.position is None) for p in planes}) > 1:
        raise SeriesError("frames of different orientations, sizes or pixel spacings cannot be stacked", source)
    (sx, sy), known = in_plane_spacing(first)
    warnings = [] if known else ["no pixel spacing in the file: spacing unknown, 1.0 placeholders used"]
    if first.position is None or first.orientation is None:
        if len(planes) == 1:
            return Grid(planes, 2, (sx, sy), (0.0, 0.0), np.eye(2), known, first.spacing_source, warnings)
        warnings.append(f"{len(planes)} frames carry no patient position: stacked along k with unknown spacing")
        return Grid(planes, 3, (sx, sy, 1.0), (0.0, 0.0, 0.0), np.eye(3), False, first.spacing_source, warnings)

    row, col = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 0.5:
        raise SeriesError(
            f"ImageOrientationPatient {list(first.orientation)} is not two orthogonal unit vectors", source
        )
    row, col, normal = (v / np.linalg.norm(v) for v in (row, col, normal))
    depth = np.array([p.position @ normal for p in planes])
    order = np.lexsort((np.array([p.instance for p in planes]), depth))
    planes = [planes[i] for i in order]
    depth = depth[order]
    positions = np.array([p.position for p in planes])
    if len(planes) > 1 and (dup := np.flatnonzero(np.diff(depth) < POSITION_TOL_MM)).size:
        raise SeriesError(
            f"{dup.size + 1} images share slice positions (first at {depth[dup[0]]:.3f} mm along the normal): "
            "several acquisitions, echoes or time points in one series cannot be stacked",
            source,
        )
    if len(planes) == 1:
        gap = positive_number(first.ds, "SpacingBetweenSlices") or first.slice_thickness or 1.0
        direction = np.column_stack([row, col, normal])
        return Grid(planes, 3, (sx, sy, gap), tuple(positions[0]), direction, known, first.spacing_source, warnings)

    step = (positions[-1] - positions[0]) / (len(planes) - 1)
    gap = float(np.linalg.norm(step))
    axis = step / gap
    deviation = np.linalg.norm(positions - (positions[0] + np.outer(np.arange(len(planes)), step)), axis=1)
    if deviation.max() > max(POSITION_TOL_MM, 1e-3 * gap):
        steps = np.diff(depth)
        k = int(deviation.argmax())
        warnings.append(
            f"non-uniform slice spacing (missing slices?): gaps {steps.min():.3f}-{steps.max():.3f} mm, "
            f"volume uses {gap:.3f} mm; slice {k} lies {deviation[k]:.3f} mm from its place on that grid"
        )
    lateral = np.linalg.norm(step - (step @ normal) * normal) * (len(planes) - 1)
    if lateral > max(POSITION_TOL_MM, 1e-4 * gap * len(planes)):
        tilt = np.degrees(np.arccos(np.clip(abs(axis @ normal), 0.0, 1.0)))
        warnings.append(
            f"gantry tilt {tilt:.2f} deg: voxels kept as acquired with a sheared (non-orthogonal) direction matrix "
            "whose slice axis is the true stacking direction, so the affine is exact; resample "
            "(medseg.io.resample.resample_to) before tools that assume orthogonal axes"
        )
    else:
        axis, gap = normal, float((depth[-1] - depth[0]) / (len(planes) - 1))
    direction = np.column_stack([row, col, axis])
    return Grid(planes, 3, (sx, sy, gap), tuple(positions[0]), direction, known, first.spacing_source, warnings)


def positive_number(ds: Dataset, keyword: str) -> float | None:
    """``ds.<keyword>`` as a positive finite float, else None."""
    try:
        value = float(ds.get(keyword))
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None
