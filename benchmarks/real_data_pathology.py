"""H&E nucleus accuracy on the shared CPM-15 tiles, run as a user runs it (issue 16's acceptance).

Four folds: each holds one of the four ``../shared/data/he_nuclei`` tiles out
and trains on the other three. Each fold is exactly the documented commands::

    medseg train configs/nuclei_he.yaml --data dataset.json --out run --max-minutes 8   (planned from the tiles)
    medseg batch run HELD_OUT_FOLDER results --mpp MPP

``dataset.json`` lists the three training tiles with their pixel size
(``spacing_mm`` per entry: the PNGs state none; three tiles are 20x, about
0.5 um/px, and ``cpm15_08`` is 40x, about 0.25 um/px, as the data README says),
and ``--mpp`` gives the held-out tile's. The batch writes the workflow's
instances (interiors split by the distance watershed, each with its boundary
ring); they are scored against the manual instance labels: foreground Dice,
AJI, PQ (IoU 0.5) and F1, per tile and as the mean over the four held-out tiles.

With ``--work DIR`` the runs are kept, and a fold whose model exists is only segmented and scored again.

``--variant no-stain-jitter`` trains a copy of the shipped workflow without
HED stain jitter (``augment.hed_jitter: 0``), what a user would edit to see
what stain augmentation adds.

Run from the repository root:
``python -m benchmarks.real_data_pathology [--minutes 8] [--variant shipped|no-stain-jitter] [--record]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO.parent / "shared" / "data" / "he_nuclei").resolve()
CONFIG = REPO / "configs" / "nuclei_he.yaml"
TARGETS = {"dice": 0.89, "aji": 0.71, "pq": 0.65}
MPP = {"cpm15_08": 0.25}  # um per pixel; the other tiles are 20x
DEFAULT_MPP = 0.5


def medseg_command(*args: str) -> None:
    """Run ``medseg ARGS`` as a user does (the installed console script beside this interpreter)."""
    exe = Path(sys.executable).with_name("medseg")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"medseg {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")


def workflow(work: Path, variant: str) -> Path:
    """The workflow YAML of ``variant``: the shipped one, or a user's copy without stain jitter."""
    if variant == "shipped":
        return CONFIG
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    config.setdefault("augment", {})["hed_jitter"] = 0.0  # an override the planner keeps
    path = work / "nuclei_he_no_stain_jitter.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_fold(work: Path, held_out: str, tiles: list[str], config: Path, minutes: float, seed: int) -> dict:
    """Train on the tiles other than ``held_out``, batch-segment ``held_out``; its scores."""
    import medseg
    from medseg.metrics.instances import instance_metrics

    entries = [{"image": str(DATA / f"{t}.png"), "label": str(DATA / f"{t}_labels.png"),
                "spacing_mm": [MPP.get(t, DEFAULT_MPP) / 1000.0] * 2} for t in tiles if t != held_out]
    dataset = work / "dataset.json"
    dataset.write_text(json.dumps({"name": "cpm15", "training": entries}, indent=1))
    reused = (work / "run" / "model_card.json").exists()  # a kept --work folder resumes at the first untrained fold
    if not reused:
        medseg_command("train", str(config), "--data", str(dataset), "--out", str(work / "run"),
                       "--max-minutes", f"{minutes:g}", "--seed", str(seed), "--device", "cpu")
    training = json.loads((work / "run" / "model_card.json").read_text())["training"]
    train_min, epochs = training["seconds"] / 60, training["epochs_run"]
    inputs = work / "held_out"
    inputs.mkdir(exist_ok=True)
    shutil.copy(DATA / f"{held_out}.png", inputs / f"{held_out}.png")
    medseg_command("batch", str(work / "run"), str(inputs), str(work / "results"), "--mpp",
                   f"{MPP.get(held_out, DEFAULT_MPP):g}", "--readable-ids", "--quiet", "--force")
    (instances_file,) = (work / "results" / "cases").glob("*/instances.png")
    predicted = medseg.load(instances_file).array
    reference = medseg.load(DATA / f"{held_out}_labels.png").array
    fg_p, fg_r = predicted > 0, reference > 0
    scores = instance_metrics(predicted, reference, iou_threshold=0.5)
    return {"tile": held_out, "dice": 2.0 * float((fg_p & fg_r).sum()) / float(fg_p.sum() + fg_r.sum()),
            "aji": scores["aji"], "pq": scores["pq"], "f1": scores["f1"], "n_ref": scores["n_ref"],
            "n_pred": scores["n_pred"], "train_min": train_min, "epochs": epochs, "reused": reused}


def report(rows: pd.DataFrame, variant: str, minutes: float, seed: int, total_min: float, load: tuple[float, float]) -> str:
    """Markdown: one line per fold, the mean over the held-out tiles, and the verdict against the targets."""
    lines = [f"Variant **{variant}**, seed {seed}.", "",
             "| held-out tile | foreground Dice | AJI | PQ | F1@0.5 | nuclei (ref / pred) | training min | epochs |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines.extend(f"| {r.tile} | {r.dice:.4f} | {r.aji:.4f} | {r.pq:.4f} | {r.f1:.4f} | {r.n_ref} / {r.n_pred} "
                 f"| {r.train_min:.1f} | {r.epochs} |" for r in rows.itertuples())
    mean = rows[["dice", "aji", "pq", "f1"]].mean()
    lines.append(f"| **mean** | **{mean['dice']:.4f}** | **{mean['aji']:.4f}** | **{mean['pq']:.4f}** | {mean['f1']:.4f} | | | |")
    verdict = "; ".join(f"{k} {mean[k]:.4f} (target >= {v}): {'met' if mean[k] >= v else 'NOT met'}"
                        for k, v in TARGETS.items())
    note = (f"Each fold: `medseg train <workflow> --data dataset.json --max-minutes {minutes:g}` on the three other tiles "
            "(pixel sizes in dataset.json), then `medseg batch` on the held-out tile with `--mpp`; its instances.png "
            f"against the manual instance labels. {total_min:.1f} min end to end"
            + (f" ({int(rows['reused'].sum())} of the {len(rows)} models kept from an earlier run of this script and "
               "only segmented and scored again)" if rows["reused"].any() else "")
            + f"; 1-minute load average {load[0]:.1f} at the start and {load[1]:.1f} at the end on {os.cpu_count()} cores.")
    return "\n".join(lines) + "\n\n" + verdict + ".\n\n" + note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per fold, minutes (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", choices=("shipped", "no-stain-jitter"), default="shipped")
    parser.add_argument("--folds", type=int, nargs="*", help="fold numbers to run (default: all four)")
    parser.add_argument("--work", type=Path, help="keep the runs in this folder (default: a temporary one)")
    parser.add_argument("--record", action="store_true", help="write the table into docs/RESULTS.md")
    args = parser.parse_args(argv)
    tiles = sorted(p.stem for p in DATA.glob("cpm15_??.png"))
    load_before, tic = os.getloadavg()[0], time.monotonic()
    rows, runs = [], []
    with tempfile.TemporaryDirectory(prefix="medseg_he_") as tmp:
        root = args.work or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        config = workflow(root, args.variant)
        for k, held_out in enumerate(tiles):
            if args.folds and k not in args.folds:
                continue
            work = root / f"{args.variant}_seed{args.seed}_fold{k}"
            work.mkdir(parents=True, exist_ok=True)
            rows.append(run_fold(work, held_out, tiles, config, args.minutes, args.seed))
            runs.append((f"Fold {k} ({held_out} held out)", work))
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
        from benchmarks.real_data import plan_summary

        text = report(pd.DataFrame(rows), args.variant, args.minutes, args.seed, (time.monotonic() - tic) / 60,
                      (load_before, os.getloadavg()[0])) + "\n\n" + plan_summary(runs)
    print(text)
    if args.record:
        from benchmarks._record import record

        record("RESULTS.md", f"real_data_pathology_{args.variant}",
               f"### Real data: H&E nuclei, four folds (`benchmarks/real_data_pathology.py`)\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
