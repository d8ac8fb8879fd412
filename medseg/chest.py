"""Chest radiograph measurements from lung and heart masks: areas and the cardiothoracic ratio (CTR).

The CTR is the maximal horizontal width of the heart over the maximal inner
width of the thorax, both along image rows (array axis 0, the ``[column, row]``
convention of :class:`~medseg.io.image.Image`):

* heart width: from the heart's leftmost to its rightmost pixel, whatever rows
  they lie on (the sum of the two greatest distances of the heart borders from
  the midline, as a radiologist measures it);
* inner thoracic width: per row, from the outer edge of one lung to the outer
  edge of the other (the lungs' outer edges follow the inner rib margins), the
  widest such row.

Widths are whole pixels (first to last pixel inclusive) times the column pixel
size, in mm when the spacing is known; areas in cm^2. A lung cut by the image
edge, a missing structure, a heart outside the lungs' span, a right lung on the
patient's left, or a heart wider than the thorax is flagged: the CTR of such a
mask is not to be trusted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medseg.errors import LabelError
from medseg.io.image import Image, LabelMap
from medseg.labelmap import as_label_map, drawn_on
from medseg.measurement import align_labels

STRUCTURES = ("right_lung", "left_lung", "heart")
"""The structures measured, named as the patient's sides."""
DEFAULT_LABELS = {1: "right_lung", 2: "left_lung", 3: "heart"}
"""Label values assumed when a label map names none (``configs/xray_chest.yaml``, the JSRT/SCR label maps)."""


@dataclass(frozen=True)
class ChestMeasurement:
    """The measurements of one radiograph's masks.

    Attributes
    ----------
    area_px : dict of str to int
        Pixels of each structure in :data:`STRUCTURES`.
    pixel_mm : tuple of float or None
        Pixel size ``(column, row)`` in mm; None when the spacing is unknown.
    heart_columns : tuple of int or None
        First and last column holding heart pixels.
    thorax_columns : tuple of int or None
        First and last lung column on the row of the widest thorax.
    thorax_row : int or None
        That row.
    cut_by_edge : list of str
        The lungs that touch the image edge (their areas and the thoracic width are lower bounds).
    problems : list of str
        Why the masks are implausible (a structure missing, the heart outside
        the lungs' span, laterality swapped, no row through both lungs, heart
        wider than thorax); empty when plausible.
    """

    area_px: dict[str, int]
    pixel_mm: tuple[float, float] | None
    heart_columns: tuple[int, int] | None
    thorax_columns: tuple[int, int] | None
    thorax_row: int | None
    cut_by_edge: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def heart_width_px(self) -> int | None:
        """Maximal horizontal heart width, pixels."""
        return None if self.heart_columns is None else self.heart_columns[1] - self.heart_columns[0] + 1

    @property
    def thoracic_width_px(self) -> int | None:
        """Maximal inner thoracic width, pixels."""
        return None if self.thorax_columns is None else self.thorax_columns[1] - self.thorax_columns[0] + 1

    @property
    def ctr(self) -> float:
        """Cardiothoracic ratio (unitless); NaN when the heart or a lung is missing."""
        heart, thorax = self.heart_width_px, self.thoracic_width_px
        return math.nan if heart is None or thorax is None else heart / thorax

    def row(self) -> dict[str, Any]:
        """One table row: areas (cm^2), widths (mm and px), ``ctr``, ``lung_cut_by_edge``, ``implausible``, ``flags``.

        Physical columns are NaN when the pixel size is unknown (``spacing_known``
        False); values are rounded to 6 decimals (far below a pixel).
        """
        cm2 = math.nan if self.pixel_mm is None else self.pixel_mm[0] * self.pixel_mm[1] / 100.0
        mm = math.nan if self.pixel_mm is None else self.pixel_mm[0]
        heart, thorax = self.heart_width_px, self.thoracic_width_px
        physical = {f"{name}_area_cm2": self.area_px[name] * cm2 for name in STRUCTURES} | {
            "heart_width_mm": math.nan if heart is None else heart * mm,
            "thoracic_width_mm": math.nan if thorax is None else thorax * mm,
        }
        cut = [f"{name.replace('_', ' ')} cut by the image edge" for name in self.cut_by_edge]
        return {k: round(v, 6) for k, v in physical.items()} | {
            "heart_width_px": heart,
            "thoracic_width_px": thorax,
            "ctr": round(self.ctr, 6),
            "thoracic_row": self.thorax_row,
            "spacing_known": self.pixel_mm is not None,
            "lung_cut_by_edge": bool(self.cut_by_edge),
            "implausible": bool(self.problems),
            "flags": "; ".join(cut + self.problems),
        }


ROW_COLUMNS: tuple[str, ...] = tuple(ChestMeasurement(dict.fromkeys(STRUCTURES, 0), None, None, None, None).row())
"""The columns of :meth:`ChestMeasurement.row`, in order."""


def chest_labels(labels: LabelMap, label_names: Mapping[int, str] | None = None) -> dict[str, int]:
    """Label value of each structure in :data:`STRUCTURES`, from names such as ``"right lung"`` or ``"heart"``.

    Names come from ``label_names``, else from the label map; a map naming
    nothing uses :data:`DEFAULT_LABELS`.

    Raises
    ------
    medseg.errors.LabelError
        When the names given do not include all three structures.
    """
    names = dict(label_names) if label_names is not None else labels.label_names or DEFAULT_LABELS
    by_name = {str(v).strip().lower().replace(" ", "_").replace("-", "_"): int(k) for k, v in names.items()}
    missing = [s for s in STRUCTURES if s not in by_name]
    if missing:
        raise LabelError(
            f"chest measurements need labels named {', '.join(STRUCTURES)}; the label names {names} lack "
            f"{', '.join(missing)}",
            labels.source,
        )
    return {s: by_name[s] for s in STRUCTURES}


def on_radiograph_grid(labels: Image, image: Image) -> Image:
    """``labels`` on ``image``'s grid: a mask without a pixel size (a plain PNG) with the radiograph's pixel
    dimensions is taken as drawn on it (:func:`~medseg.labelmap.drawn_on`); any other mask must match in world
    space (:func:`~medseg.measurement.align_labels`)."""
    drawn = drawn_on(labels, image)
    return drawn if drawn is not None else align_labels(labels, image)


def _span(columns: np.ndarray) -> tuple[int, int] | None:
    return (int(columns.min()), int(columns.max())) if columns.size else None


def _widest_row(right: np.ndarray, left: np.ndarray) -> tuple[tuple[int, int] | None, int | None]:
    """First and last lung column of the widest row holding both lungs, and that row."""
    both = right.any(axis=0) & left.any(axis=0)
    if not both.any():
        return None, None
    lungs = right | left
    first = lungs.argmax(axis=0)
    last = lungs.shape[0] - 1 - lungs[::-1].argmax(axis=0)
    width = np.where(both, last - first + 1, 0)
    row = int(width.argmax())
    return (int(first[row]), int(last[row])), row


def _cut_by_edge(masks: dict[str, np.ndarray]) -> list[str]:
    return [
        name
        for name in ("right_lung", "left_lung")
        if (m := masks[name])[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()
    ]


def _problems(
    masks: dict[str, np.ndarray], image: Image, heart: tuple[int, int] | None, thorax: tuple[int, int] | None
) -> list[str]:
    """Why the masks are implausible (see :class:`ChestMeasurement`)."""
    flags = [f"no {name.replace('_', ' ')} in the mask" for name, m in masks.items() if not m.any()]
    lungs = masks["right_lung"] | masks["left_lung"]
    if heart is not None and lungs.any():
        lung_cols, lung_rows = _span(np.flatnonzero(lungs.any(axis=1))), _span(np.flatnonzero(lungs.any(axis=0)))
        heart_rows = np.flatnonzero(masks["heart"].any(axis=0))
        centre_row = float(heart_rows.mean())
        if heart[0] < lung_cols[0] or heart[1] > lung_cols[1] or not lung_rows[0] <= centre_row <= lung_rows[1]:
            flags.append("heart outside the lungs' span")
    if masks["right_lung"].any() and masks["left_lung"].any():
        # column axis pointing to the patient's left (LPS +x): the right lung lies at lower columns
        toward_left = image.direction[0, 0] >= 0
        right_i, left_i = (np.nonzero(masks[name])[0].mean() for name in ("right_lung", "left_lung"))
        if (right_i > left_i) == toward_left:
            flags.append("right lung on the patient's left (laterality swapped?)")
        if thorax is None:
            flags.append("no image row holds both lungs")
    if heart is not None and thorax is not None and heart[1] - heart[0] > thorax[1] - thorax[0]:
        flags.append("heart wider than the thorax")
    return flags


def chest_measurements(
    labels: Image, image: Image | None = None, *, label_names: Mapping[int, str] | None = None
) -> ChestMeasurement:
    """Lung and heart areas and the cardiothoracic ratio of a chest radiograph's label map.

    Parameters
    ----------
    labels : Image
        2D label map with right lung, left lung and heart (the patient's sides),
        named as :func:`chest_labels` reads them.
    image : Image, optional
        The radiograph; its pixel size applies to a mask that has none (see
        :func:`on_radiograph_grid`).
    label_names : mapping of int to str, optional
        Names of the label values, overriding the label map's.

    Returns
    -------
    ChestMeasurement
        ``.row()`` gives the table row.

    Raises
    ------
    medseg.errors.LabelError
        A label map that is not 2D, or lacks names for the three structures.
    """
    if labels.ndim != 2:
        raise LabelError(f"chest radiograph measurements need a 2D label map, got {labels.ndim}D", labels.source)
    if image is not None:
        labels = on_radiograph_grid(labels, image)
    label_map = as_label_map(labels)
    values = chest_labels(label_map, label_names)
    masks = {name: label_map.array == value for name, value in values.items()}
    heart = _span(np.flatnonzero(masks["heart"].any(axis=1)))
    thorax, row = _widest_row(masks["right_lung"], masks["left_lung"])
    return ChestMeasurement(
        area_px={name: int(m.sum()) for name, m in masks.items()},
        pixel_mm=(label_map.spacing[0], label_map.spacing[1]) if label_map.spacing_known else None,
        heart_columns=heart,
        thorax_columns=thorax,
        thorax_row=row,
        cut_by_edge=_cut_by_edge(masks),
        problems=_problems(masks, label_map, heart, thorax),
    )
