"""Chest radiograph accuracy on the shared JSRT films, run as a user runs it (issue 15's acceptance).

For each split, 11 of the 14 films of ``../shared/data/xray_jsrt`` go into an
MSD ``dataset.json`` (training entries only: medseg picks its own validation
cases among them, so the held-out films never steer training) and the other 3
are held out. Each split is exactly the documented commands::

    medseg train configs/xray_chest.yaml --data dataset.json --out run --max-minutes 15
    medseg ctr run HELD_OUT_FILMS... --out ctr.csv --labels-out predicted/

Then, per held-out film: Dice of right lung, left lung, both lungs and heart
against the SCR masks (on the film's grid), and the absolute difference
between the predicted CTR and the CTR of the reference masks (both by
:mod:`medseg.chest`). Splits rotate the held-out triple through the films in
name order; with 14 films the fifth split holds out the last two and the first.

With ``--work DIR`` the runs are kept, and a split whose training finished is only segmented and scored again.

Run from the repository root: ``python -m benchmarks.real_data_chest [--splits 5] [--minutes 15] [--record]``.
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
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO.parent / "shared" / "data" / "xray_jsrt").resolve()
CONFIG = REPO / "configs" / "xray_chest.yaml"
NAMES = {1: "right_lung", 2: "left_lung", 3: "heart"}
TARGETS = {"lungs": 0.975, "heart": 0.935, "ctr_error": 0.01}
PIXEL_MM = 0.35  # JSRT films: 0.35 mm pixels (stated in the films' PNG pHYs; the SCR mask PNGs state none)


def medseg_command(*args: str) -> None:
    """Run ``medseg ARGS`` as a user does (the installed console script beside this interpreter)."""
    exe = Path(sys.executable).with_name("medseg")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"medseg {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")


def splits(films: list[str], n: int) -> list[list[str]]:
    """``n`` held-out triples rotating through ``films`` (wrapping at the end)."""
    return [[films[(3 * k + i) % len(films)] for i in range(3)] for k in range(n)]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def run_split(work: Path, held_out: list[str], films: list[str], minutes: float, seed: int) -> list[dict]:
    """Train on the films not in ``held_out``, segment ``held_out``; one row of scores per held-out film."""
    import medseg
    from medseg.chest import chest_measurements, on_radiograph_grid
    from medseg.models.store import training_finished

    entries = [{"image": str(DATA / "images" / f"{f}.png"), "label": str(DATA / "labels" / f"{f}.png")}
               for f in films if f not in held_out]
    dataset = work / "dataset.json"
    dataset.write_text(json.dumps({"name": "jsrt", "labels": {"0": "background", **{str(k): v for k, v in NAMES.items()}},
                                   "spacing_mm": [PIXEL_MM, PIXEL_MM], "training": entries}, indent=1))
    reused = training_finished(work / "run")  # a finished run in a kept --work folder is only scored again
    if not reused:
        medseg_command("train", str(CONFIG), "--data", str(dataset), "--out", str(work / "run"),
                       "--max-minutes", f"{minutes:g}", "--seed", str(seed), "--device", "cpu")
    training = json.loads((work / "run" / "model_card.json").read_text())["training"]
    train_min, epochs = training["seconds"] / 60, training["epochs_run"]
    medseg_command("ctr", str(work / "run"), *(str(DATA / "images" / f"{f}.png") for f in held_out),
                   "--out", str(work / "ctr.csv"), "--labels-out", str(work / "predicted"), "--device", "cpu")
    predicted_ctr = pd.read_csv(work / "ctr.csv")
    rows = []
    for film_name in held_out:
        film = medseg.load(DATA / "images" / f"{film_name}.png")
        reference = on_radiograph_grid(medseg.load_labels(DATA / "labels" / f"{film_name}.png", NAMES), film)
        prediction = medseg.load(next((work / "predicted").glob(f"{film_name}*")))
        ref, pred = reference.array, prediction.array
        ctr_ref = chest_measurements(reference, film).ctr
        ctr_pred = float(predicted_ctr.loc[predicted_ctr["file"].map(lambda f: Path(f).stem) == film_name, "ctr"].iloc[0])
        rows.append({"film": film_name, "right_lung": dice(pred == 1, ref == 1), "left_lung": dice(pred == 2, ref == 2),
                     "lungs": dice(np.isin(pred, (1, 2)), np.isin(ref, (1, 2))), "heart": dice(pred == 3, ref == 3),
                     "ctr_reference": ctr_ref, "ctr_model": ctr_pred, "ctr_error": abs(ctr_pred - ctr_ref),
                     "train_min": train_min, "epochs": epochs, "reused": reused})
    return rows


def _verdict(name: str, value: float, sense: str) -> str:
    key = {"CTR error": "ctr_error"}.get(name, name)
    met = value >= TARGETS[key] if sense == ">=" else value <= TARGETS[key]
    return f"{name} {value:.4f} (target {sense} {TARGETS[key]}): {'met' if met else 'NOT met'}"


def report(rows: pd.DataFrame, n_splits: int, minutes: float, total_min: float, load: tuple[float, float]) -> str:
    """Markdown: one line per split, the mean over every held-out film, and the verdict against the targets."""
    from medseg.train.dataset import MIN_CASES_TO_HOLD_OUT

    lines = ["| split | held-out films | lungs Dice | right lung | left lung | heart Dice | CTR abs. error | training min | epochs |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for split, part in rows.groupby("split", sort=True):
        lines.append(f"| {split + 1} | {', '.join(part['film'])} | {part['lungs'].mean():.4f} | {part['right_lung'].mean():.4f} "
                     f"| {part['left_lung'].mean():.4f} | {part['heart'].mean():.4f} | {part['ctr_error'].mean():.4f} "
                     f"| {part['train_min'].iloc[0]:.1f} | {part['epochs'].iloc[0]} |")
    mean = rows[["lungs", "right_lung", "left_lung", "heart", "ctr_error"]].mean()
    lines.append(f"| **all** | {len(rows)} held-out films | **{mean['lungs']:.4f}** | {mean['right_lung']:.4f} "
                 f"| {mean['left_lung']:.4f} | **{mean['heart']:.4f}** | **{mean['ctr_error']:.4f}** | | |")
    n_kept = int(rows.groupby("split")["reused"].first().sum())
    kept = f" ({n_kept} of the {n_splits} models kept from an earlier run of this script, only scored again)" if n_kept else ""
    verdict = [_verdict("lungs", mean["lungs"], ">="), _verdict("heart", mean["heart"], ">="),
               _verdict("CTR error", mean["ctr_error"], "<=")]
    note = (f"{n_splits} splits, each `medseg train configs/xray_chest.yaml --data dataset.json --max-minutes {minutes:g}` "
            f"on 11 films (dataset.json's training entries; under {MIN_CASES_TO_HOLD_OUT} cases medseg trains on all and "
            "validates on them) and `medseg ctr` on the 3 "
            "held out; Dice per film on the film's grid against the SCR masks, CTR error against the CTR of those masks "
            f"(`medseg.chest`). {total_min:.1f} min end to end{kept}; 1-minute load average {load[0]:.1f} at the start and "
            f"{load[1]:.1f} at the end on {os.cpu_count()} cores.")
    return "\n".join(lines) + "\n\n" + "; ".join(verdict) + ".\n\n" + note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5, help="held-out triples (default 5: every film held out once)")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per split, minutes (default 15)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="keep the runs in this folder (default: a temporary one)")
    parser.add_argument("--record", action="store_true", help="write the table into docs/RESULTS.md")
    args = parser.parse_args(argv)
    films = sorted(p.stem for p in (DATA / "images").glob("*.png"))
    load_before, tic = os.getloadavg()[0], time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="medseg_chest_") as tmp:
        root = args.work or Path(tmp)
        for k, held_out in enumerate(splits(films, args.splits)):
            work = root / f"split{k + 1}"
            work.mkdir(parents=True, exist_ok=True)
            rows += [{"split": k, **row} for row in run_split(work, held_out, films, args.minutes, args.seed)]
            print(f"split {k + 1}: {pd.DataFrame(rows[-3:])[['film', 'lungs', 'heart', 'ctr_error']].to_string(index=False)}",
                  flush=True)
        from benchmarks.real_data import plan_summary

        plans = plan_summary([(f"Split {k + 1}", root / f"split{k + 1}") for k in range(args.splits)])
        text = report(pd.DataFrame(rows), args.splits, args.minutes, (time.monotonic() - tic) / 60,
                      (load_before, os.getloadavg()[0])) + "\n\n" + plans
    print(text)
    if args.record:
        sys.path.insert(0, str(REPO))
        from benchmarks._record import record

        record("RESULTS.md", "real_data_chest", "### Real data: chest radiographs, lungs, heart and CTR "
               f"(`benchmarks/real_data_chest.py`)\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
