"""``medseg plan``, ``medseg train``, ``medseg segment`` and ``medseg demo``: the segmentation engine on the command
line."""

from __future__ import annotations

import json
from pathlib import Path

import typer

DEVICE_HELP = "auto (CUDA when available), cpu or cuda."
SEGMENTER_HELP = ("Model directory (medseg train output), MONAI bundle directory, nnU-Net v2 results folder "
                  "(RESULTS/DatasetNNN_Name/Trainer__Plans__configuration), multi-model task file (YAML/JSON), or a "
                  "registered segmenter spec SCHEME:NAME (see medseg.segmenters).")


def train(
    config: Path | None = typer.Argument(None, help="Workflow YAML (see configs/): a complete config is trained as "
                                         "it is; a task (labels, modality, post-processing, overrides) is planned."),
    data: Path = typer.Option(..., "--data", help="MSD-style dataset.json (imagesTr/labelsTr)."),
    out: Path = typer.Option(..., "--out", help="Output model directory, e.g. runs/NAME."),
    workflow: Path | None = typer.Option(None, "--workflow", help="Task YAML to plan for (as CONFIG, always planned)."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", "--minutes", help="Wall-clock training budget, "
                                             "minutes."),
    max_epochs: int | None = typer.Option(None, "--max-epochs", help="Override train.max_epochs."),
    seed: int = typer.Option(0, "--seed", help="Random seed (runs are reproducible on the CPU)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint_last.pt (with --folds: keep "
                                "the finished folds, continue the interrupted one)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    folds: int | None = typer.Option(None, "--folds", help="Train K cross-validation models (OUT/fold_0 ...; the "
                                     "budget is per fold) and write their cross-validation Dice to OUT/summary.json; "
                                     "OUT then segments as their ensemble."),
) -> None:
    """Train a segmentation model; writes model.safetensors + model_card.json + train_log.csv into OUT.

    Without a complete config, the settings are planned from the dataset first (as `medseg plan` does; the plan
    is written to OUT/plan.yaml and its table printed).
    """
    from medseg.errors import ConfigError
    from medseg.train import train as run_training

    if config is not None and workflow is not None:
        raise ConfigError("give the workflow once: as CONFIG or as --workflow", "--workflow")
    from medseg.plan import read_workflow

    source = workflow or config
    task, complete = read_workflow(source) if source is not None else ({}, False)
    recipe: object = config
    if folds is not None:
        from medseg.train.crossval import check_folds

        check_folds(folds, data)  # before planning, which reads every case
    if workflow is not None or not complete:
        plan = _plan_and_show(data, task, max_minutes, device)
        out.mkdir(parents=True, exist_ok=True)
        _write_plan(plan, out / "plan.yaml")
        recipe = plan.config
    if folds is not None:
        from medseg.train.crossval import cross_validate

        ensemble = cross_validate(recipe, data, out, folds=folds, max_minutes=max_minutes, max_epochs=max_epochs,
                                  seed=seed, resume=resume, device=device)
        summary = json.loads((ensemble / "summary.json").read_text())
        dice = ", ".join(f"{k} {v:.3f}" for k, v in summary["mean"].items() if v is not None)
        typer.echo(f"{folds}-fold ensemble written to {ensemble} (cross-validation Dice: {dice}; per case in "
                   f"{ensemble / 'summary.json'})")
        return
    model_dir = run_training(
        recipe, data, out, max_minutes=max_minutes, max_epochs=max_epochs, seed=seed, resume=resume, device=device
    )
    from medseg.models import load_model

    card = load_model(model_dir, device="cpu").card
    dice = ", ".join(f"{k} {v:.3f}" for k, v in card["validation"]["dice"].items())
    typer.echo(f"model written to {model_dir} (validation Dice: {dice}; {card['training']['stopped']})")


def plan(
    data: Path = typer.Argument(..., help="MSD-style dataset.json."),
    workflow: Path | None = typer.Option(None, "--workflow", help="Task YAML: labels, label_source, modality, "
                                         "post-processing and any override (shown as set by the workflow)."),
    minutes: float | None = typer.Option(None, "--minutes", help="Training budget, minutes (default: the workflow's "
                                         "train.max_minutes, else 10)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    out: Path = typer.Option(Path("plan.yaml"), "--out", help="Where the planned config goes."),
) -> None:
    """Plan every data-dependent setting of a workflow from the dataset; write a complete config and show why."""
    from medseg.plan import read_workflow

    task = read_workflow(workflow)[0] if workflow is not None else {}
    _write_plan(_plan_and_show(data, task, minutes, device), out)
    typer.echo(f"plan written to {out}")


def _plan_and_show(data: Path, task: dict, minutes: float | None, device: str):  # -> Plan
    """Plan ``task`` for ``data`` and print the decision table (stderr, so stdout stays the command's result)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from medseg.plan import plan_dataset
    from medseg.preprocess import resolve_device

    budget = minutes if minutes is not None else (task.get("train") or {}).get("max_minutes") or 10.0
    target = resolve_device(device).type
    result = plan_dataset(data, task, minutes=float(budget), device=target)
    table = Table("setting", "value", "set by", "reason", title=f"plan for {data} ({budget:g} min, {target})")
    for row in result.table():
        table.add_row(*(escape(cell) for cell in row))
    console = Console(stderr=True, highlight=False)
    console.print(table)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    return result


def _write_plan(result, path: Path) -> None:  # result: Plan
    import yaml

    from medseg.atomic import write_text_atomic

    header = "# Planned by `medseg plan` from the dataset; every setting's reason is in the plan table.\n"
    write_text_atomic(path, header + yaml.safe_dump(result.workflow().model_dump(mode="json"), sort_keys=False))


def segmenter_options(device: str, *, folds: str | None = None, step_size: float | None = None,
                      no_mirroring: bool = False, checkpoint: str | None = None) -> dict[str, object]:
    """Loader options of ``load_segmenter`` from the CLI, each only when the user gave it.

    ``device`` applies to every network kind; ``folds``, ``step_size``,
    ``mirroring`` and ``checkpoint`` are nnU-Net's (results folders and tasks).
    """
    options: dict[str, object] = {} if device == "auto" else {"device": device}
    if folds is not None:
        options["folds"] = folds
    if step_size is not None:
        options["step_size"] = step_size
    if no_mirroring:
        options["mirroring"] = False
    if checkpoint is not None:
        options["checkpoint"] = checkpoint
    return options


_CLI_NAMES = {"folds": "--folds", "step_size": "--step-size", "mirroring": "--no-mirroring",
              "checkpoint": "--checkpoint", "device": "--device"}  # fmt: skip


def load_with_options(spec: str, options: dict[str, object]):  # -> Segmenter
    """``load_segmenter(spec, **options)``; an option the segmenter's kind does not take is a ConfigError naming it."""
    from medseg.errors import ConfigError
    from medseg.segmenters import load_segmenter

    try:
        return load_segmenter(spec, **options)
    except TypeError as exc:
        text = str(exc)
        bad = [k for k in options if f"'{k}'" in text and "keyword argument" in text]
        if not bad:
            raise
        raise ConfigError(f"{_CLI_NAMES.get(bad[0], bad[0])} does not apply to this segmenter (nnU-Net results "
                          "folders and task files take --folds, --step-size, --no-mirroring, --checkpoint; medseg "
                          "ensembles take --folds)",
                          spec) from None


def segment(
    model: Path = typer.Argument(..., metavar="SEGMENTER", help=SEGMENTER_HELP),
    inputs: list[Path] = typer.Argument(..., metavar="INPUT...", help="Images: files or DICOM series folders."),
    out: Path = typer.Option(..., "--out", help="Folder for the label maps (<name>.nii.gz, or <name>.png/.tif "
                                                "for PNG/JPEG/TIFF inputs)."),
    fmt: str | None = typer.Option(None, "--format", help="Label-map format: nifti, nrrd, mha, png, tiff, "
                                                          "dicom-seg (a DICOM SEG <name>.dcm of a DICOM input) or "
                                                          "rtstruct (default: the input's own family, else nifti)."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write <name>_prob_<label>.nii.gz."),
    postprocess: bool = typer.Option(True, "--postprocess/--no-postprocess", help="Apply the workflow's "
                                     "post-processing rules (as medseg batch does), or write the network's own map."),
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Mirroring test-time augmentation (default: model card)."
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    folds: str | None = typer.Option(None, "--folds", help="Ensembles (medseg train --folds) and nnU-Net: folds to "
                                     "average, e.g. '--folds 0,1' or '--folds all' (default: every fold)."),
    step_size: float | None = typer.Option(None, "--step-size", help="nnU-Net: sliding-window step as a fraction "
                                                                      "of the patch (default 0.5)."),
    no_mirroring: bool = typer.Option(False, "--no-mirroring", help="nnU-Net: no test-time mirroring."),
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="nnU-Net: final (checkpoint_final.pth, "
                                                                      "default) or best (checkpoint_best.pth)."),
    mpp: float | None = typer.Option(None, "--mpp", help="Micrometres per pixel of slides and 2D pictures (over what the files state)."),
    tile: int | None = typer.Option(None, "--tile", help="Slides: tile core size, level-0 px (default: derived)."),
    overlap: int | None = typer.Option(None, "--overlap", help="Slides: context per tile side, px (default: derived)."),
    tissue: bool = typer.Option(True, "--tissue/--no-tissue", help="Slides: process only tiles with tissue."),
    label_tiff: bool = typer.Option(False, "--label-tiff", help="Slides: also write a pyramidal label TIFF."),
    units: str = typer.Option("um", "--units", help="Slides: um (needs a pixel size) or px."),
    object_type: str = typer.Option("detection", "--object-type", help="Slides: QuPath objectType, detection or cell."),
) -> None:
    """Segment images; each label map lands on its input's exact grid.

    Whole-slide images (SVS, NDPI, MRXS, pyramidal TIFF ...) are segmented tile by tile into OUT/<name>/:
    cells.csv, detections.geojson (QuPath), summary.json, tissue.png (and labels.tif).
    """
    from medseg.io.formats import format_named
    from medseg.workflows import segment_files

    if fmt is not None:
        format_named(fmt)  # an unknown format fails before any model work
    segmenter = load_with_options(str(model), segmenter_options(device, folds=folds, step_size=step_size,
                                                             no_mirroring=no_mirroring, checkpoint=checkpoint))
    options = {} if tta is None else {"tta": tta}
    slide_options = {"mpp": mpp, "tile": tile, "overlap": overlap, "tissue": tissue, "label_tiff": label_tiff,
                     "units": units, "object_type": object_type, "progress": True}
    for path in segment_files(segmenter, list(inputs), out, output_format_name=fmt, probabilities=probabilities,
                              slide_options=slide_options, postprocess=postprocess, **options):
        typer.echo(str(path))


def demo(
    sample_data: Path = typer.Option(Path("sample_data"), "--sample-data", help="The sample data folder."),
    out: Path = typer.Option(Path("demo_output"), "--out", help="Folder for the label maps."),
    retrain: bool = typer.Option(False, "--retrain", help="Train the demo models even when committed ones exist."),
) -> None:
    """The main job on sample_data/: segment held-out phantoms, print Dice and volumes, write label maps."""
    from medseg.demo import run_demo

    run_demo(sample_data, out, retrain=retrain)


def register(app: typer.Typer) -> None:
    """Add ``train``, ``plan``, ``segment`` and ``demo`` to the ``medseg`` app."""
    app.command("train")(train)
    app.command("plan")(plan)
    app.command("segment")(segment)
    app.command("demo")(demo)
