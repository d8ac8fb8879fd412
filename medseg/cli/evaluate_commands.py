"""``medseg evaluate``: compare predictions with references, write tables and an HTML report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from medseg.errors import ConfigError

_HELP = (
    "Evaluate predicted label maps against references and write per_case.csv, summary.json, report.html.\n\n"
    "PRED and GT are both files or both folders. In folders, files pair by case name: the file name without its "
    "image suffix (.nii.gz, .nrrd, .png ...) and without one trailing _pred, _prediction, _seg, _segmentation, "
    "_label, _labels, _mask, _gt or _ref tag (case-insensitive); sub-folders are DICOM series named the same way. "
    "Unpaired files are listed in the report.\n\n"
    "A prediction on a different grid that overlaps the reference in world space is resampled (nearest neighbour) "
    "onto the reference grid, and the report says so; a case that cannot be read or does not overlap fails alone, "
    "with a message naming both files.\n\n"
    "With --instances each map is an instance map (one integer per object); per_case.csv then has one row per case "
    "(label 1, name 'object') with tp, fp, fn, precision, recall, f1, sq, pq and aji."
)


def read_label_names(path: Path) -> dict[int, str]:
    """Label names from JSON: ``{"1": "spleen", ...}``, or MSD/nnU-Net style ``{"labels": {"spleen": 1, ...}}``.

    Raises
    ------
    medseg.errors.ConfigError
        When the file cannot be read or maps nothing to integers.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read label names: {exc}", path) from exc
    if isinstance(data, dict) and isinstance(data.get("labels"), dict):
        data = data["labels"]
    if not isinstance(data, dict):
        raise ConfigError("label names must be a JSON object mapping label values to names", path)
    names: dict[int, str] = {}
    for key, value in data.items():
        if str(key).lstrip("-").isdigit():
            names[int(key)] = str(value)
        elif isinstance(value, int) or str(value).isdigit():
            names[int(value)] = str(key)
        else:
            raise ConfigError(f"entry {key!r}: {value!r} maps no integer label value to a name", path)
    names.pop(0, None)
    return names


def register(app: typer.Typer) -> None:
    """Add ``medseg evaluate`` to ``app``."""

    @app.command("evaluate", help=_HELP)
    def evaluate(
        pred: Annotated[Path, typer.Argument(help="Predicted label map, or a folder of them.")],
        gt: Annotated[Path, typer.Argument(help="Reference label map, or a folder of them.")],
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Output folder for per_case.csv, summary.json, report.html.")
        ],
        labels: Annotated[
            Path | None, typer.Option("--labels", help="JSON file of label names (value -> name).")
        ] = None,
        tolerance_mm: Annotated[
            float, typer.Option("--tolerance-mm", help="Tolerance of the normalised surface distance, mm.")
        ] = 2.0,
        instances: Annotated[
            bool, typer.Option("--instances", help="Label maps are instance maps: report F1, PQ, SQ, AJI.")
        ] = False,
        iou_threshold: Annotated[float, typer.Option("--iou-threshold", help="IoU for matching instances.")] = 0.5,
        images: Annotated[
            Path | None, typer.Option("--images", help="Scans (file or folder) to draw the overlays on.")
        ] = None,
        overlays: Annotated[bool, typer.Option("--overlays/--no-overlays", help="Draw per-case overlays.")] = True,
    ) -> None:
        from medseg.metrics.cohort import evaluate_cohort
        from medseg.report import case_figures, write_cohort_report

        if tolerance_mm < 0:
            raise ConfigError(f"--tolerance-mm must be >= 0, got {tolerance_mm}")
        names = read_label_names(labels) if labels else None

        def progress(rec) -> None:
            if rec.status == "ok":
                extra = f" ({'; '.join(rec.notes)})" if rec.notes else ""
                typer.echo(f"  {rec.case}: ok{extra}")
            else:
                typer.secho(f"  {rec.case}: FAILED: {rec.error}", fg="red", err=True)

        result = evaluate_cohort(
            pred,
            gt,
            labels=names,
            tolerance_mm=tolerance_mm,
            instances=instances,
            iou_threshold=iou_threshold,
            images=images,
            figures=case_figures if overlays else None,
            progress=progress,
        )
        for path in result.unpaired_pred:
            typer.echo(f"  unpaired prediction: {path}")
        for path in result.unpaired_ref:
            typer.echo(f"  unpaired reference: {path}")
        paths = write_cohort_report(result, out)
        ok = sum(c.status == "ok" for c in result.cases)
        typer.echo(
            f"{ok} of {len(result.cases)} case(s) evaluated, {len(result.unpaired_pred) + len(result.unpaired_ref)} "
            f"unpaired file(s); wrote {paths['per_case']}, {paths['summary']}, {paths['report']}"
        )
