"""``medseg evaluate``: compare predictions with references, write tables and an HTML report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from medseg._files import read_label_names
from medseg.errors import ConfigError, WriteError

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


def _check_options(out: Path, tolerance_mm: float, iou_threshold: float) -> None:
    """A :class:`MedsegError` naming the option or file for a value evaluation cannot use, before any work."""
    from medseg.metrics.instances import check_iou_threshold

    if out.exists() and not out.is_dir():
        raise WriteError("is a file, but --out is the folder for the tables and the report", out)
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ConfigError(f"must be a finite distance >= 0 mm, got {tolerance_mm}", "--tolerance-mm")
    try:
        check_iou_threshold(iou_threshold)
    except ValueError as exc:
        raise ConfigError(f"must be in (0, 1], got {iou_threshold}", "--iou-threshold") from exc


def _evaluate_baseline(spec: str, images: Path, gt: Path, out: Path, progress: Any, options: dict[str, Any]) -> None:
    """Run the segmenter ``spec`` on ``images`` and write its evaluation under ``OUT/baselines/<name>/``."""
    from medseg.report import write_cohort_report
    from medseg.segmenters import load_segmenter
    from medseg.workflows.evaluate import baseline_folder_name, evaluate_segmenter

    segmenter = load_segmenter(spec)
    folder = out / "baselines" / baseline_folder_name(segmenter)
    typer.echo(f"baseline {segmenter.name} ({spec}):")
    result = evaluate_segmenter(segmenter, images, gt, folder, progress=progress, **options)
    paths = write_cohort_report(result, folder, title=f"medseg evaluation: baseline {segmenter.name}")
    typer.echo(f"  baseline tables and report in {paths['report'].parent}")


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
        baselines: Annotated[
            list[str] | None,
            typer.Option("--baseline", help="A segmenter (model directory, bundle, SCHEME:NAME) run on --images and "
                                            "scored the same way, into OUT/baselines/<name>/ (repeatable)."),
        ] = None,
    ) -> None:
        from medseg.metrics.cohort import evaluate_cohort
        from medseg.report import case_figures, write_cohort_report

        _check_options(out, tolerance_mm, iou_threshold)
        if baselines and images is None:
            raise ConfigError("needs --images: the scans the baseline segments", "--baseline")
        names = read_label_names(labels) if labels else None

        def progress(rec) -> None:
            if rec.status == "ok":
                extra = f" ({'; '.join(rec.notes)})" if rec.notes else ""
                typer.echo(f"  {rec.case}: ok{extra}")
            else:
                typer.secho(f"  {rec.case}: FAILED: {rec.error}", fg="red", err=True)

        options = {"labels": names, "tolerance_mm": tolerance_mm, "instances": instances,
                   "iou_threshold": iou_threshold, "figures": case_figures if overlays else None}
        result = evaluate_cohort(pred, gt, images=images, progress=progress, **options)
        for spec in baselines or []:
            _evaluate_baseline(spec, images, gt, out, progress, options)
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
