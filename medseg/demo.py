"""``medseg demo`` (= ``make demo``): the main job on the bundled ``sample_data/``.

1. Lists what the sample data holds (data sets, cases, grids).
2. Loads the small committed models ``sample_data/models/ct_organs`` (3D organs)
   and ``sample_data/models/nuclei_2d`` (2D nuclei), each produced by
   ``medseg train`` (the command is in its model card) -- or trains them
   within a few minutes when missing or when ``--retrain`` is given.
3. Runs the per-case pipeline of ``medseg batch`` (:func:`medseg.workflows.run_case`:
   segment, post-process, measure) on the held-out cases (the ``test`` list of
   each ``dataset.json``, and the CT phantom stored as a DICOM series), prints per case and label the
   Dice and predicted vs true volume (mL; area in um^2 for 2D), and writes the
   label maps and the table to ``demo_output/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from medseg.errors import ConfigError
from medseg.io import find_series, load, save
from medseg.io.image import Image, LabelMap
from medseg.workflows.case import run_case

if TYPE_CHECKING:
    from medseg.models.model import SegmentationModel


@dataclass(frozen=True)
class DemoTask:
    """One demo model: its workflow config, training data set and extra held-out inputs."""

    model: str  # folder name under sample_data/models and the config name under configs/
    dataset: str  # folder under sample_data with dataset.json
    train_minutes: float  # budget when the committed model is missing
    dicom_case: tuple[str, str] | None = None  # (DICOM folder, reference label path) under sample_data


TASKS = (
    DemoTask(
        "ct_organs",
        "ct_organs",
        train_minutes=2.5,
        dicom_case=("ct_organs_dicom", "ct_organs/labelsTs/case_006.nii.gz"),
    ),
    DemoTask("nuclei_2d", "nuclei", train_minutes=1.5),
)


def _inventory(sample_data: Path, console: Console) -> None:
    """Print each sample data set: number of training/test cases and the first image's grid."""
    table = Table(title=f"sample data in {sample_data}", title_justify="left")
    for col in ("data set", "train", "test", "first image"):
        table.add_column(col)
    for ds in sorted(p for p in sample_data.iterdir() if (p / "dataset.json").is_file()):
        desc = json.loads((ds / "dataset.json").read_text())
        first = load(ds / desc["training"][0]["image"])
        table.add_row(ds.name, str(len(desc.get("training", []))), str(len(desc.get("test", []))), repr(first))
    for folder in sorted(p for p in sample_data.iterdir() if p.is_dir() and p.name.endswith("_dicom")):
        series = find_series(folder)  # headers only: the held-out loop decodes the pixels
        s = series[0]
        grid = f"{'x'.join(map(str, s.shape))}, spacing {'x'.join(f'{v:.4g}' for v in s.spacing)} mm, {s.orientation}"
        table.add_row(folder.name, "", f"{len(series)} series", f"{s.modality} {grid}")
    console.print(table)


def _model(task: DemoTask, sample_data: Path, out: Path, retrain: bool, console: Console) -> SegmentationModel:
    """The committed demo model, or one trained now within ``task.train_minutes``."""
    from medseg.models import load_model
    from medseg.plan import workflow_for
    from medseg.train import train

    committed = sample_data / "models" / task.model
    if (committed / "model_card.json").is_file() and not retrain:
        model = load_model(committed)
        how = model.card["training"].get("command", "medseg train")
        console.print(f"[bold]{task.model}[/bold]: committed model {committed} ({how})")
        return model
    config = sample_data.resolve().parent / "configs" / f"{task.model}.yaml"
    if not config.is_file():
        raise ConfigError(f"no committed model and no config to train one ({config} missing)", committed)
    target = out / "models" / task.model
    console.print(f"[bold]{task.model}[/bold]: training for at most {task.train_minutes} min into {target}")
    if target.exists():
        import shutil

        shutil.rmtree(target)
    dataset = sample_data / task.dataset / "dataset.json"
    recipe, _ = workflow_for(config, dataset, minutes=task.train_minutes)  # the shipped task YAMLs are planned
    return load_model(train(recipe, dataset, target, max_minutes=task.train_minutes))


def _score(task: DemoTask, model: SegmentationModel, case: str, pred: LabelMap, truth: Image) -> pd.DataFrame:
    """Dice and sizes per label of one case (:func:`medseg.metrics.cohort.evaluate_pair`, the rule of every command).

    Instance-trained models (nuclei) are scored on the foreground: their truth is an instance map.
    """
    from medseg.labelmap import as_label_map
    from medseg.metrics.cohort import evaluate_pair

    names = model.label_names
    if model.config.label_source == "instances":
        pred = pred.with_labels((pred.array > 0).astype(np.uint8), {1: "nucleus"})
        truth = as_label_map(truth)
        truth = truth.with_labels((truth.array > 0).astype(np.uint8), {1: "nucleus"})
        names = {1: "nucleus"}
    table, _, _, _ = evaluate_pair(pred, truth, case=case, labels=names, surface=False)
    table.insert(0, "model", task.model)
    if "ref_area_mm2" in table:
        table["ref_area_um2"], table["pred_area_um2"] = table.ref_area_mm2 * 1e6, table.pred_area_mm2 * 1e6
    return table


def _held_out(task: DemoTask, sample_data: Path) -> list[tuple[str, Path, Path]]:
    """(case name, image path, reference label path) of each held-out case of ``task``."""
    ds = sample_data / task.dataset
    desc = json.loads((ds / "dataset.json").read_text())
    cases = [(Path(e["image"]).name.split(".")[0], ds / e["image"], ds / e["label"]) for e in desc.get("test", [])]
    if task.dicom_case:
        folder, label = task.dicom_case
        cases.append((f"{folder} (DICOM)", sample_data / folder, sample_data / label))
    return cases


def _print_table(results: pd.DataFrame, console: Console) -> None:
    for model, part in results.groupby("model", sort=False):
        is3d = "ref_volume_ml" in part and part["ref_volume_ml"].notna().any()
        size = ("pred_volume_ml", "ref_volume_ml", "mL") if is3d else ("pred_area_um2", "ref_area_um2", "um^2")
        table = Table(title=f"{model}: held-out cases", title_justify="left")
        for col in ("case", "label", "Dice", f"predicted {size[2]}", f"true {size[2]}"):
            table.add_column(col, justify="left" if col in ("case", "label") else "right")
        for _, row in part.iterrows():
            table.add_row(row.case, row["name"], f"{row.dice:.3f}", f"{row[size[0]]:.1f}", f"{row[size[1]]:.1f}")
        mean = part.groupby("name", sort=False).dice.mean()
        table.add_row("[bold]mean[/bold]", "all", f"[bold]{mean.mean():.3f}[/bold]", "", "")
        console.print(table)


def run_demo(
    sample_data: str | Path = "sample_data", out: str | Path = "demo_output", *, retrain: bool = False
) -> pd.DataFrame:
    """Run the demo; returns the per-case, per-label table also written to ``OUT/demo_results.csv``.

    Parameters
    ----------
    sample_data : path-like
        The sample data folder (``medseg sample-data`` writes it).
    out : path-like
        Output folder for label maps (``OUT/<model>/<case>.nii.gz``) and the table.
    retrain : bool
        Train the demo models (a few minutes) even when committed ones exist.
    """
    from medseg.atomic import write_text_atomic

    sample_data, out = Path(sample_data), Path(out)
    console = Console()
    started = time.monotonic()
    if not sample_data.is_dir():
        raise ConfigError("sample data folder not found (run `medseg sample-data` to write it)", sample_data)
    _inventory(sample_data, console)
    tables = []
    for task in TASKS:
        model = _model(task, sample_data, out, retrain, console)
        for case, image_path, label_path in _held_out(task, sample_data):
            tic = time.monotonic()
            image = load(image_path)
            pred = run_case(model, image).semantic
            name = case.split(" ")[0]
            written = save(pred, out / task.model / f"{name}.nii.gz")
            grid = "x".join(map(str, image.shape))
            console.print(f"  {case} ({grid}): segmented in {time.monotonic() - tic:.1f} s -> {written}")
            tables.append(_score(task, model, case, pred, load(label_path)))
    results = pd.concat(tables, ignore_index=True)
    _print_table(results, console)
    write_text_atomic(out / "demo_results.csv", results.to_csv(index=False))
    console.print(f"label maps and demo_results.csv in {out}/ ({time.monotonic() - started:.0f} s in all)")
    return results
