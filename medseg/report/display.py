"""Rich notebook display: an HTML card for images and label maps, and a styled view of result tables.

``Image._repr_html_`` calls :func:`image_html`, so an image shown in a notebook
cell is a small card: shape, spacing, orientation, modality, intensity range
and unit (for label maps each label's size) beside a three-plane thumbnail
(the picture itself in 2D). :func:`style_table` gives the pandas Styler of a
measurement or evaluation table: overlap scores on a red-to-green colour
scale, units written out in the headers.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from medseg.io.image import Image, LabelMap
from medseg.report.figures import png_bytes
from medseg.report.show import show

# overlap scores in [0, 1], drawn on the colour scale
_SCORES = ("dice", "iou", "nsd", "precision", "recall", "f1", "pq", "sq", "rq", "aji", "sensitivity", "specificity")
_UNITS = {
    "ml": "mL",
    "mm": "mm",
    "mm2": "mm²",
    "mm3": "mm³",
    "cm2": "cm²",
    "um": "µm",
    "um2": "µm²",
    "hu": "HU",
    "px": "px",
    "s": "s",
    "pct": "%",
}
_UNIT_SUFFIX = re.compile(r"^(.*)_(" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r")$")


def _thumbnail(image: Image) -> str:
    fig = show(image, figsize=(6.6, 2.3) if image.ndim == 3 else (2.6, 2.6), style="fill", legend=False)
    return base64.b64encode(png_bytes(fig, dpi=60)).decode("ascii")


def _rows(image: Image) -> list[tuple[str, str]]:
    shape = " x ".join(map(str, image.shape)) + (f" x {image.n_channels} channels" if image.channel_axis else "")
    spacing = " x ".join(f"{s:.4g}" for s in image.spacing)
    rows = [
        ("type", f"{type(image).__name__}, {image.array.dtype}"),
        ("shape", shape),
        ("spacing", f"{spacing} mm" if image.spacing_known else "unknown (sizes in pixels)"),
        ("orientation", image.orientation),
        ("modality", image.modality or "?"),
    ]
    if not isinstance(image, LabelMap) and image.array.size:
        lo, hi = float(image.array.min()), float(image.array.max())
        rows.append(("intensity", f"{lo:.6g} .. {hi:.6g} {image.intensity_unit or '(arbitrary units)'}"))
    if image.source:
        rows.append(("file", Path(image.source).name))
    rows += [("warning", w) for w in image.warnings[:3]]
    return rows


def _label_table(labels: LabelMap) -> str:
    counts = np.bincount(labels.array.ravel().astype(np.int64))
    values = [v for v in np.flatnonzero(counts) if v]
    if labels.spacing_known and labels.ndim == 3:
        size, unit = labels.voxel_volume_mm3 / 1000.0, "volume (mL)"
    elif labels.spacing_known:
        size, unit = labels.voxel_volume_mm3, "area (mm²)"
    else:
        size, unit = 1.0, "pixels"
    body = "".join(
        f"<tr><td>{v}</td><td>{html.escape(labels.label_names.get(int(v), ''))}</td>"
        f"<td style='text-align:right'>{counts[v] * size:.5g}</td></tr>"
        for v in values[:40]
    )
    more = f"<tr><td colspan=3>... {len(values) - 40} more labels</td></tr>" if len(values) > 40 else ""
    return f"<table><tr><th>label</th><th>name</th><th>{unit}</th></tr>{body}{more}</table>"


def image_html(image: Image) -> str:
    """The notebook card of ``image``: a table of its properties (per-label sizes for a label map) and a thumbnail."""
    facts = "".join(
        f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in _rows(image)
    )
    labels = _label_table(image) if isinstance(image, LabelMap) else ""
    return (
        "<div style='display:flex;gap:1em;align-items:flex-start;font-size:12px'>"
        f"<div><table>{facts}</table>{labels}</div>"
        f"<img alt='thumbnail' src='data:image/png;base64,{_thumbnail(image)}'/></div>"
    )


def header(column: str) -> str:
    """A column name with its unit written out: ``volume_ml`` -> ``volume (mL)``, ``hd95_mm`` -> ``hd95 (mm)``."""
    match = _UNIT_SUFFIX.match(column)
    if not match:
        return column.replace("_", " ")
    return f"{match.group(1).replace('_', ' ')} ({_UNITS[match.group(2)]})"


def style_table(table: pd.DataFrame, precision: int = 3) -> Styler:
    """A pandas Styler of a measurement or evaluation table: scores on a colour scale, units in the headers.

    Overlap scores (Dice, IoU, NSD, F1, PQ, ...) are shaded red (0) to green
    (1); floats show ``precision`` decimals. The Styler's id is derived from
    the table's content, so the same table gives the same HTML.
    """
    scores = [c for c in table.columns if str(c).lower() in _SCORES]
    uuid = hashlib.sha256(pd.util.hash_pandas_object(table, index=True).to_numpy().tobytes()).hexdigest()[:10]
    styler = table.style.set_uuid(uuid).format(precision=precision, na_rep="")
    if scores:
        styler = styler.background_gradient(cmap="RdYlGn", subset=scores, vmin=0.0, vmax=1.0)
    return styler.relabel_index([header(str(c)) for c in table.columns], axis="columns")
