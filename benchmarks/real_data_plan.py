"""Planned training on real data, run as a user runs it (issue 12's acceptance): one `medseg train` call per task.

Tasks (``--task``):

* ``xray``: ``configs/xray_lungs.yaml`` (a task YAML: labels, modality, post-processing; everything else
  planned) trained on ``xray_chest/1`` and ``2`` with ``3`` as the validation case, then ``medseg segment``
  on ``3``: lung Dice against ``3-mask.png`` (target >= 0.97 with seeds 0 and 1).

Each run is exactly::

    medseg train configs/TASK.yaml --data dataset.json --out run --minutes M --seed S
    medseg segment run IMAGE --out predicted

and the plan table of each run (``run/plan.yaml`` and the command's output) is printed.

Run from the repository root: ``python -m benchmarks.real_data_plan --task xray [--seeds 0 1] [--record]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO.parent / "shared" / "data").resolve()
TARGETS = {"xray": 0.97}


def medseg_command(*args: str) -> str:
    """Run ``medseg ARGS`` as a user does; its stdout and stderr."""
    exe = Path(sys.executable).with_name("medseg")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"medseg {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def xray(work: Path, minutes: float, seed: int) -> dict:
    import medseg

    chest = DATA / "xray_chest"
    entry = {i: {"image": str(chest / f"{i}.jpg"), "label": str(chest / f"{i}-mask.png")} for i in (1, 2, 3)}
    dataset = work / "dataset.json"
    dataset.write_text(json.dumps({"name": "xray_chest", "training": [entry[1], entry[2]], "validation": [entry[3]]}))
    log = medseg_command("train", str(REPO / "configs" / "xray_lungs.yaml"), "--data", str(dataset), "--out",
                         str(work / "run"), "--minutes", f"{minutes:g}", "--seed", str(seed), "--device", "cpu")
    medseg_command("segment", str(work / "run"), entry[3]["image"], "--out", str(work / "predicted"), "--device", "cpu")
    predicted = medseg.load(next((work / "predicted").glob("3*"))).array > 0
    reference = medseg.load(entry[3]["label"]).array > 0
    dice = 2.0 * float((predicted & reference).sum()) / float(predicted.sum() + reference.sum())
    card = json.loads((work / "run" / "model_card.json").read_text())
    return {"task": "xray", "seed": seed, "metric": "lung Dice on xray_chest/3", "value": dice,
            "epochs": card["training"]["epochs_run"], "minutes": card["training"]["seconds"] / 60, "log": log}


TASKS = {"xray": xray}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), action="append", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--record", action="store_true", help="write the table into docs/RESULTS.md")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="medseg_plan_") as tmp:
        root = args.work or Path(tmp)
        for task in args.task:
            for seed in args.seeds:
                work = root / f"{task}_seed{seed}"
                work.mkdir(parents=True, exist_ok=True)
                rows.append(TASKS[task](work, args.minutes, seed))
                print(rows[-1].pop("log"), flush=True)
                print(rows[-1], flush=True)
    lines = ["| task | seed | metric | value | target | epochs | training min |", "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['task']} | {r['seed']} | {r['metric']} | {r['value']:.4f} | >= {TARGETS[r['task']]} "
              f"| {r['epochs']} | {r['minutes']:.1f} |" for r in rows]
    met = all(r["value"] >= TARGETS[r["task"]] for r in rows)
    text = "\n".join(lines) + (f"\n\nEvery run is one `medseg train configs/<task>.yaml --data dataset.json --minutes "
                               f"{args.minutes:g} --seed S` (planned: the task YAML holds no data-dependent number) and "
                               f"`medseg segment`; targets {'met' if met else 'NOT met'} (seeds {args.seeds}).")
    print(text)
    if args.record:
        from benchmarks._record import record

        record("RESULTS.md", "real_data_plan", f"### Real data, planned training (`benchmarks/real_data_plan.py`)\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
