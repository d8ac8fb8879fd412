"""Real-data acceptance of planned training (issue 12): every task is one `medseg train` call as a user makes it.

Each run is exactly what a user types, with the shipped task YAML (labels,
modality, post-processing; every data-dependent number planned from the
dataset) and a time budget::

    medseg train configs/TASK.yaml --data dataset.json --out run --minutes M --seed S
    medseg segment run IMAGE --out predicted          (xray)
    medseg batch run INPUTS results                    (nuclei, ct: with the workflow's post-processing)

Tasks (``--task``, repeatable; default all), each with seeds 0 and 1:

* ``xray``: ``configs/xray_lungs.yaml`` trained on ``xray_chest/1`` and ``2`` with ``3`` as the validation
  case, 10 min: lung Dice on ``3`` (target >= 0.97);
* ``nuclei``: ``configs/nuclei_2d.yaml`` trained on the left half of ``cells_fluo/nuclei.tif``, 6 min:
  foreground Dice (>= 0.95) and instance F1 at IoU 0.5 (>= 0.94) of ``medseg batch``'s instances on the right
  half;
* ``ct``: ``configs/ct_organs.yaml`` trained on ``ct_3mm.nii.gz`` (liver, spleen, kidneys, stomach; the label
  names in dataset.json), 10 min, applied to the series ``ct_abdomen_dicom/`` by ``medseg batch``: liver
  (>= 0.92) and spleen (>= 0.88) Dice against ``ct_abdomen_dicom_reference_labels.nii.gz`` in world space.

The only code here writes the datasets (crops and label remapping through
medseg.io) and scores the outputs the commands wrote; the plan table of every
run is printed. Run from the repository root::

    python -m benchmarks.real_data --task xray [--seeds 0 1] [--minutes M] [--work DIR] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO.parent / "shared" / "data").resolve()

# TotalSegmentator v2 "total" indices in the reference CT label maps (reference_label_names.json)
CT_SOURCE_LABELS = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5, "stomach": 6}
#: task -> (the shipped task YAML under configs/, budget minutes, {metric: target})
TASKS: dict[str, tuple[str, float, dict[str, float]]] = {
    "xray": ("xray_lungs.yaml", 10.0, {"lung_dice": 0.97}),
    "nuclei": ("nuclei_2d.yaml", 6.0, {"foreground_dice": 0.95, "instance_f1_iou50": 0.94}),
    "ct": ("ct_organs.yaml", 10.0, {"liver_dice": 0.92, "spleen_dice": 0.88}),
}


def medseg_command(*args: str) -> str:
    """Run ``medseg ARGS`` as a user does; its stdout and stderr."""
    exe = Path(sys.executable).with_name("medseg")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"medseg {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks."""
    return 2.0 * float((pred & ref).sum()) / float(pred.sum() + ref.sum())


def train(work: Path, task: str, dataset: Path, minutes: float, seed: int, epochs: int | None) -> tuple[str, dict]:
    """``medseg train configs/TASK.yaml --data DATASET --out WORK/run --minutes M --seed S``; its log and card.

    A finished run already in ``WORK/run`` (``--work`` given again) is kept and only scored again.
    """
    from medseg.models.store import training_finished

    card_path = work / "run" / "model_card.json"
    if training_finished(work / "run"):
        return f"(kept the finished run in {work / 'run'})", json.loads(card_path.read_text())
    args = ["train", str(REPO / "configs" / TASKS[task][0]), "--data", str(dataset), "--out", str(work / "run"),
            "--minutes", f"{minutes:g}", "--seed", str(seed), "--device", "cpu"]
    log = medseg_command(*args, *(["--max-epochs", str(epochs)] if epochs else []))
    return log, json.loads(card_path.read_text())


def xray(work: Path, minutes: float, seed: int, epochs: int | None = None) -> tuple[dict[str, float], dict, str]:
    """Radiographs 1 and 2 train, 3 validates; lung Dice of `medseg segment` on 3."""
    import medseg

    chest = DATA / "xray_chest"
    entry = {i: {"image": str(chest / f"{i}.jpg"), "label": str(chest / f"{i}-mask.png")} for i in (1, 2, 3)}
    dataset = work / "dataset.json"
    dataset.write_text(json.dumps({"name": "xray_chest", "training": [entry[1], entry[2]], "validation": [entry[3]]}))
    log, card = train(work, "xray", dataset, minutes, seed, epochs)
    medseg_command("segment", str(work / "run"), entry[3]["image"], "--out", str(work / "predicted"), "--device", "cpu")
    predicted = medseg.load(next((work / "predicted").glob("3*"))).array > 0
    return {"lung_dice": dice(predicted, medseg.load(entry[3]["label"]).array > 0)}, card, log


def nuclei(work: Path, minutes: float, seed: int, epochs: int | None = None) -> tuple[dict[str, float], dict, str]:
    """The left half of cells_fluo/nuclei.tif trains; `medseg batch`'s instances on the right half are scored."""
    import medseg
    from medseg.metrics import match_instances

    image = medseg.load(DATA / "cells_fluo" / "nuclei.tif")
    labels = medseg.load(DATA / "cells_fluo" / "nuclei_labels.tif")
    nx, ny = image.shape  # axis 0 runs along image columns: the left half is [0, nx/2)
    left = [medseg.save(im.crop((0, 0), (nx // 2, ny)), work / f"left_{name}.tif")
            for im, name in ((image, "image"), (labels, "labels"))]
    inputs = work / "right_half"
    medseg.save(image.crop((nx // 2, 0), (nx, ny)), inputs / "right.tif")
    reference = labels.crop((nx // 2, 0), (nx, ny)).array
    dataset = work / "dataset.json"
    dataset.write_text(json.dumps({"name": "nuclei_left_half", "training": [{"image": str(left[0]),
                                                                             "label": str(left[1])}]}))
    log, card = train(work, "nuclei", dataset, minutes, seed, epochs)
    medseg_command("batch", str(work / "run"), str(inputs), str(work / "results"), "--readable-ids", "--quiet",
                   "--force")
    (instances_file,) = (work / "results" / "cases").glob("*/instances.*")
    instances = medseg.load(instances_file).array
    match = match_instances(instances, reference)
    return {"foreground_dice": dice(instances > 0, reference > 0), "instance_f1_iou50": match.f1}, card, log


def ct(work: Path, minutes: float, seed: int, epochs: int | None = None) -> tuple[dict[str, float], dict, str]:
    """ct_3mm trains (five organs named in dataset.json); `medseg batch` on the DICOM series is scored."""
    import medseg
    from medseg.metrics.cohort import align_to_reference

    source = medseg.load(DATA / "ct_3mm_reference_labels.nii.gz")
    remapped = np.zeros(source.shape, np.uint8)
    for index, value in enumerate(CT_SOURCE_LABELS.values(), start=1):
        remapped[source.array == value] = index
    label_path = medseg.save(source.with_array(remapped), work / "ct_3mm_labels.nii.gz")
    names = {"0": "background", **{str(i): n for i, n in enumerate(CT_SOURCE_LABELS, start=1)}}
    dataset = work / "dataset.json"
    dataset.write_text(json.dumps({"name": "ct_3mm", "labels": names,
                                   "training": [{"image": str(DATA / "ct_3mm.nii.gz"), "label": str(label_path)}]}))
    log, card = train(work, "ct", dataset, minutes, seed, epochs)
    medseg_command("batch", str(work / "run"), str(DATA / "ct_abdomen_dicom"), str(work / "results"),
                   "--readable-ids", "--quiet", "--force")
    (labels_file,) = (work / "results" / "cases").glob("*/labels.*")
    predicted = medseg.load(labels_file)
    reference, _ = align_to_reference(medseg.load(DATA / "ct_abdomen_dicom_reference_labels.nii.gz"), predicted)
    pred, ref = predicted.array, reference.array
    labels = card["labels"]
    return {f"{organ}_dice": dice(pred == labels[organ], ref == CT_SOURCE_LABELS[organ])
            for organ in ("liver", "spleen", "stomach")}, card, log


RUNS = {"xray": xray, "nuclei": nuclei, "ct": ct}


def plan_table(work: Path) -> str:
    """The planned settings of a run (``run/plan.yaml`` as one line per top-level key)."""
    import yaml

    plan = yaml.safe_load((work / "run" / "plan.yaml").read_text())
    keep = ("spacing_mm", "spacing_px", "patch_size", "network", "intensity", "augment", "train", "inference")
    return "\n".join(f"- `{k}`: `{json.dumps(plan[k], separators=(',', ':'))}`" for k in keep if plan.get(k) is not None)


def _differences(first: dict, other: dict) -> list[str]:
    """``key`` (or ``key.sub`` within a section) and ``other``'s value, wherever it differs from ``first``."""
    out = []
    for key in sorted(first.keys() | other.keys()):
        a, b = first.get(key), other.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"`{key}.{sub}` {b.get(sub)}" for sub in sorted(a.keys() | b.keys()) if a.get(sub) != b.get(sub)]
        elif a != b:
            out.append(f"`{key}` {b}")
    return out


def plan_summary(runs: list[tuple[str, Path]]) -> str:
    """Markdown: the plan of the first of ``(name, work)`` runs (``medseg train`` planned it from the task YAML into
    ``work/run/plan.yaml``) and where each other run's plan differs."""
    import yaml

    planned = [yaml.safe_load((work / "run" / "plan.yaml").read_text()) for _, work in runs]
    (first, work), *rest = runs
    lines = [f"{first} plan:\n\n{plan_table(work)}"]
    for (name, _), plan in zip(rest, planned[1:], strict=True):
        changed = _differences(planned[0], plan)
        lines.append(f"{name}: {f'as {first} but ' + ', '.join(changed) if changed else 'the same plan'}.")
    return "\n\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(RUNS), action="append", help="task (repeatable); default: all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--minutes", type=float, help="training budget per run (default: the issue's per task)")
    parser.add_argument("--work", type=Path, help="keep datasets and runs in this folder")
    parser.add_argument("--record", action="store_true", help="write the tables into docs/RESULTS.md")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        parser.error(f"real data not found at {DATA}")
    met_all = True
    with tempfile.TemporaryDirectory(prefix="medseg_real_") as tmp:
        root = args.work or Path(tmp)
        for task in args.task or list(RUNS):
            task_yaml, budget, targets = TASKS[task]
            minutes = args.minutes or budget
            lines = ["| task | metric | seed | value | target | result | epochs | training min |",
                     "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |"]
            plans, met, kept = [], True, 0
            load_before, tic = os.getloadavg()[0], time.monotonic()
            for seed in args.seeds:
                work = root / f"{task}_seed{seed}"
                work.mkdir(parents=True, exist_ok=True)
                scores, card, log = RUNS[task](work, minutes, seed)
                print(log, flush=True)
                kept += log.startswith("(kept")
                training = card["training"]
                for metric, value in scores.items():
                    target = targets.get(metric)
                    verdict = "" if target is None else ("pass" if value >= target else "FAIL")
                    met &= target is None or value >= target
                    lines.append(f"| {task} | {metric} | {seed} | {value:.4f} | "
                                 f"{'' if target is None else f'>= {target}'} | {verdict} | {training['epochs_run']} "
                                 f"| {training['seconds'] / 60:.1f} |")
                    print(lines[-1], flush=True)
                plans.append(f"Seed {seed} plan:\n\n{plan_table(work)}")
            total = (time.monotonic() - tic) / 60
            met_all &= met
            text = "\n".join(lines)
            note = (f"Each run: `medseg train configs/{task_yaml} --data dataset.json --minutes {minutes:g} --seed S` "
                    "(planned: the task YAML holds no data-dependent number), then "
                    f"{'`medseg segment`' if task == 'xray' else '`medseg batch` (with the post-processing rules)'}; "
                    f"targets {'met' if met else 'NOT met'} (seeds {args.seeds}). {total:.1f} min end to end"
                    + (f" ({kept} of the {len(args.seeds)} runs trained by an earlier call with the same --work, "
                       "only segmented and scored again)" if kept else "")
                    + "; 1-minute "
                    f"load average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end on "
                    f"{os.cpu_count()} cores.")
            print(text, "\n", note, sep="")
            if args.record:
                from benchmarks._record import record

                record("RESULTS.md", f"real_data_{task}", f"### Real data, planned: {task} (`benchmarks/real_data.py`)"
                       f"\n\n{text}\n\n{note}\n\n" + "\n\n".join(plans))
    return 0 if met_all else 1


if __name__ == "__main__":
    sys.exit(main())
