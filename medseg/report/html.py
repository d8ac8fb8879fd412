"""The evaluation report: ``per_case.csv``, ``summary.json`` and a self-contained ``report.html``.

The HTML file embeds every figure as a base64 PNG and its few lines of
JavaScript (table sorting) inline: it opens offline, from any folder, and can
be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from medseg import __version__
from medseg.atomic import atomic_path, write_text_atomic
from medseg.metrics.cohort import CaseRecord, CohortResult
from medseg.metrics.evaluate import OVERLAP_METRICS, SURFACE_METRICS, summarize
from medseg.report.figures import box_plots, plot_volumes, png_bytes

_TABLE_COLUMNS = (
    "case",
    "label",
    "name",
    "empty_in",
    *OVERLAP_METRICS,
    *SURFACE_METRICS,
    "ref_volume_ml",
    "pred_volume_ml",
    "rel_volume_diff_pct",
    "ref_area_mm2",
    "pred_area_mm2",
    "rel_area_diff_pct",
    "n_ref",
    "n_pred",
    "tp",
    "fp",
    "fn",
    "f1",
    "sq",
    "pq",
    "aji",
)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eee;cursor:pointer;position:sticky;top:0}
td.t,th.t{text-align:left}
.err{color:#b00020}.note{color:#555}
.case{border-top:2px solid #ddd;margin-top:1em;padding-top:0.5em}
img{max-width:100%;margin:4px 0}
"""

# click a header to sort by it; numbers sort numerically, blanks last
_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th){
  th.addEventListener('click', function(){
    var col = th.cellIndex, body = th.closest('table').tBodies[0];
    var rows = Array.from(body.rows);
    var asc = th.dataset.dir !== 'asc';
    th.dataset.dir = asc ? 'asc' : 'desc';
    function key(r){var t=r.cells[col].textContent.trim(); var v=parseFloat(t);
      return t===''||t==='nan' ? null : (isNaN(v) ? t : v);}
    rows.sort(function(a,b){var x=key(a), y=key(b);
      if(x===null) return 1; if(y===null) return -1;
      if(typeof x==='number' && typeof y==='number') return asc ? x-y : y-x;
      return asc ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));});
    rows.forEach(function(r){body.appendChild(r);});
  });
});
"""


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return ""
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(frame: pd.DataFrame, sortable: bool = True, table_id: str = "") -> str:
    cls = ' class="sortable"' if sortable else ""
    tid = f' id="{table_id}"' if table_id else ""
    text_cols = {c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])}
    head = "".join(
        f'<th class="t">{html.escape(str(c))}</th>' if c in text_cols else f"<th>{html.escape(str(c))}</th>"
        for c in frame.columns
    )
    body = []
    for row in frame.itertuples(index=False):
        cells = "".join(
            f'<td class="t">{_fmt(v)}</td>' if c in text_cols else f"<td>{_fmt(v)}</td>"
            for c, v in zip(frame.columns, row, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table{cls}{tid}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


_SUMMARY_SHOWN = ("dice", "hd95_mm", "assd_mm", "nsd", "abs_volume_diff_ml", "abs_area_diff_mm2", "f1", "pq", "aji")


def _summary_frame(summary: dict) -> pd.DataFrame:
    """One row per label: empty-case counts, then mean, median and n for the main metrics."""
    rows = []
    for label, entry in summary["labels"].items():
        if entry["empty_in"].get("both", 0) == entry["n_cases"]:
            continue  # absent from every prediction and reference
        row: dict[str, object] = {
            "label": label,
            "name": entry["name"],
            "cases": entry["n_cases"],
            "empty_in": ", ".join(f"{k}: {v}" for k, v in entry["empty_in"].items() if k != "none"),
        }
        for metric in _SUMMARY_SHOWN:
            st = entry["metrics"].get(metric)
            if st is not None:
                row[f"{metric} mean"], row[f"{metric} median"], row[f"{metric} n"] = st["mean"], st["median"], st["n"]
        rows.append(row)
    return pd.DataFrame(rows)


def _worst_first(per_case: pd.DataFrame, cases: Sequence[CaseRecord]) -> list[tuple[CaseRecord, str, float]]:
    """Cases ordered for review: failed ones, then by mean score (Dice, or F1 for instances) ascending."""
    metric = "dice" if "dice" in per_case else "f1" if "f1" in per_case else None
    means: dict[str, float] = {}
    if metric and len(per_case):
        means = per_case.groupby("case")[metric].mean().to_dict()  # pandas skips NaN (both-empty labels)
    scored = [(c, metric or "", float(means.get(c.case, math.nan))) for c in cases]
    return sorted(scored, key=lambda cs: (cs[0].status == "ok", math.isnan(cs[2]), cs[2]))


def write_report(
    per_case: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    cases: Sequence[CaseRecord] = (),
    summary: dict | None = None,
    unpaired_pred: Sequence[str] = (),
    unpaired_ref: Sequence[str] = (),
    title: str = "medseg evaluation",
) -> dict[str, Path]:
    """Write ``per_case.csv``, ``summary.json`` and ``report.html`` into ``out_dir`` (each atomically).

    Parameters
    ----------
    per_case : pandas.DataFrame
        One row per case x label (:func:`medseg.metrics.evaluate_case` tables
        concatenated, with a ``case`` column) or per case (instance metrics).
    out_dir : path-like
        Output folder (created).
    cases : sequence of CaseRecord
        Per-case records (notes, errors, overlay figures); without them each
        case of ``per_case`` gets a heading only.
    summary : dict, optional
        :func:`medseg.metrics.summarize` output; computed when omitted.
    unpaired_pred, unpaired_ref : sequence of str
        Files that found no partner, listed at the top of the report.

    Returns
    -------
    dict
        ``{"per_case": path, "summary": path, "report": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary if summary is not None else summarize(per_case) if len(per_case) else {"n_cases": 0, "labels": {}}
    if not cases:
        cases = [CaseRecord(str(c), "", "") for c in per_case.get("case", pd.Series(dtype=str)).unique()]
    summary = {
        **summary,
        "cases_ok": sum(c.status == "ok" for c in cases),
        "cases_failed": {c.case: c.error for c in cases if c.status != "ok"},
        "case_notes": {c.case: c.notes for c in cases if c.notes},
        "unpaired_prediction_files": list(unpaired_pred),
        "unpaired_reference_files": list(unpaired_ref),
    }
    paths = {"per_case": out / "per_case.csv", "summary": out / "summary.json", "report": out / "report.html"}
    with atomic_path(paths["per_case"]) as tmp:
        per_case.to_csv(tmp, index=False)
    write_text_atomic(paths["summary"], json.dumps(summary, indent=2, allow_nan=False, default=_json_default) + "\n")
    write_text_atomic(paths["report"], _html(per_case, cases, summary, title))
    return paths


def write_cohort_report(
    result: CohortResult, out_dir: str | os.PathLike[str], title: str = "medseg evaluation"
) -> dict[str, Path]:
    """:func:`write_report` for a :class:`medseg.metrics.CohortResult`."""
    return write_report(result.per_case, out_dir, result.cases, None, result.unpaired_pred, result.unpaired_ref, title)


def _json_default(v: object) -> object:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v)}")


def _html(per_case: pd.DataFrame, cases: Sequence[CaseRecord], summary: dict, title: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        (
            f"<p class='note'>medseg {__version__}, {stamp}. {summary['cases_ok']} case(s) evaluated, "
            f"{len(summary['cases_failed'])} failed, {len(summary['unpaired_prediction_files'])} unpaired "
            f"prediction file(s), {len(summary['unpaired_reference_files'])} unpaired reference file(s).</p>"
        ),
    ]
    if summary["cases_failed"]:
        items = "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in summary["cases_failed"].items()
        )
        parts.append(f"<h2>Failed cases</h2><ul class='err' id='failed'>{items}</ul>")
    for key, heading in (
        ("unpaired_prediction_files", "Unpaired predictions"),
        ("unpaired_reference_files", "Unpaired references"),
    ):
        if summary[key]:
            items = "".join(f"<li>{html.escape(p)}</li>" for p in summary[key])
            parts.append(f"<h2>{heading}</h2><ul id='{key}'>{items}</ul>")
    if summary["case_notes"]:
        items = "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape('; '.join(v))}</li>" for k, v in summary["case_notes"].items()
        )
        parts.append(f"<h2>Notes</h2><ul class='note' id='notes'>{items}</ul>")
    if len(per_case):
        parts.append(
            "<h2>Summary</h2><p class='note'>Statistics over finite values only; <i>n</i> is how many cases "
            "entered them, the rest were undefined (empty structures, counted in <i>empty_in</i>). "
            "summary.json has sd, quartiles and IQR too.</p>"
        )
        frame = _summary_frame(summary)
        absent = len(summary["labels"]) - len(frame)
        if absent:
            parts.append(
                f"<p class='note'>{absent} label(s) absent from every prediction and reference are not "
                "shown here (they are in per_case.csv with <i>empty_in</i> = both).</p>"
            )
        parts.append(_table(frame, table_id="summary"))
        metrics = [m for m in ("dice", "hd95_mm", "f1", "pq", "aji") if m in per_case]
        parts.append("<h2>Distributions</h2>" + _img(png_bytes(box_plots(per_case, metrics)), "box plots per label"))
        if "ref_volume_ml" in per_case or "ref_area_mm2" in per_case:
            parts.append("<h2>Volume agreement</h2>" + _img(png_bytes(plot_volumes(per_case)), "volume agreement"))
    parts.append(
        "<h2>Cases, worst first</h2><p class='note'>Overlays: reference green, prediction red; the "
        "structures with the lowest Dice of each case, three planes through each.</p>"
    )
    for rec, metric, score in _worst_first(per_case, cases):
        parts.append(
            f"<div class='case' id='case-{html.escape(rec.case)}'><h3>{html.escape(rec.case)}"
            f"{'' if math.isnan(score) else f' (mean {metric} {score:.3f})'}</h3>"
        )
        if rec.error:
            parts.append(f"<p class='err'>{html.escape(rec.error)}</p>")
        parts.extend(f"<p class='note'>{html.escape(note)}</p>" for note in rec.notes)
        parts.extend(_img(png, caption) for caption, png in rec.figures)
        parts.append("</div>")
    if len(per_case):
        cols = [c for c in _TABLE_COLUMNS if c in per_case]
        parts.append(
            "<h2>Cohort table</h2><p class='note'>One row per case and label. Click a column header to "
            "sort; blank cells are undefined values (see <i>empty_in</i>).</p>"
        )
        parts.append(_table(per_case[cols], table_id="cohort"))
    parts.append(f"<script>{_SORT_JS}</script></body></html>")
    return "\n".join(parts)
