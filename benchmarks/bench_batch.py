"""Batch throughput: ``--workers 1`` vs ``--workers 2``, and the local executor vs Ray on the same machine.

Run from the repository root::

    python -m benchmarks.bench_batch [--cases 120] [--pipeline ct --pipeline nuclei]

Two light pipelines, each on ``--cases`` copies of the project's sample data
in a temporary tree (every output folder starts empty):

* ``ct``: the committed 3D CT demo model on the sample CT phantoms
  (96 x 80 x 40 voxels): the model work is most of each case;
* ``nuclei``: the committed 2D nuclei demo model on the sample fluorescence
  images (256 x 256 pixels, ~70 nuclei each): post-processing (watershed
  split) and per-nucleus measurement are most of each case.

Throughput (cases/min) is measured over the steady state, from the moment
the last worker is ready to the last case's end, counting the cases started in
that window (read from the JSON event log); the start-up (spawning workers,
importing torch, loading the model; for Ray also starting the Ray instance)
is reported separately. The runs must agree: every
label map of every configuration equals the one of ``--workers 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data"
#: pipeline -> (model directory, input files, description of the cases)
PIPELINES: dict[str, tuple[Path, str, str]] = {
    "ct": (
        SAMPLES / "models" / "ct_organs",
        "ct_organs/images*/*.nii.gz",
        "3D CT demo model, CT phantoms 96x80x40 voxels",
    ),
    "nuclei": (
        SAMPLES / "models" / "nuclei_2d",
        "nuclei/images*/*.tif",
        "2D nuclei demo model, fluorescence images 256x256 with ~70 nuclei",
    ),
}


def _make_tree(root: Path, pattern: str, n_cases: int) -> Path:
    """``n_cases`` copies of the sample files matching ``pattern``, one per case folder."""
    sources = sorted(SAMPLES.glob(pattern))
    for i in range(n_cases):
        dst = root / f"case{i:03d}" / sources[i % len(sources)].name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sources[i % len(sources)], dst)
    return root


def _times(log: Path) -> dict[str, float]:
    """Start-up and steady-state figures from a run's event log.

    The steady state starts when the last worker is ready; it counts the cases
    whose model work started after that and ends with the last case's end.
    """
    events = [json.loads(line) for line in log.read_text().splitlines()]

    def t(e: dict) -> float:
        return datetime.fromisoformat(e["time_utc"]).timestamp()

    start = t(next(e for e in events if e["event"] == "run_start"))
    ready = [e for e in events if e["event"] == "worker_ready"]
    all_ready = max(t(e) for e in ready)
    started = {e["case_id"] for e in events if e["event"] == "case_start" and t(e) >= all_ready}
    ends = [t(e) for e in events if e["event"] in ("case_done", "case_failed") and e["case_id"] in started]
    return {
        "startup_s": all_ready - start,
        "steady_s": max(ends) - all_ready,
        "n_steady": len(ends),
        "ray_init_s": float(ready[0].get("ray_init_s", 0.0)),
        "model_load_s": max(float(e["load_s"]) for e in ready),
    }


def _run(model: Path, tree: Path, out: Path, **options: object) -> tuple[dict[str, float], float]:
    from medseg.batch import run_batch

    log = out.with_suffix(".jsonl")
    t0 = time.perf_counter()
    result = run_batch(model, tree, out, log_json=log, **options)
    wall = time.perf_counter() - t0
    assert result.exit_code == 0, result.failures
    return _times(log), wall


def _labels(out: Path) -> dict[str, np.ndarray]:
    from medseg.io import load

    return {p.parent.name: load(p).array for p in sorted((out / "cases").glob("*/labels.nii.gz"))}


def _bench(pipeline: str, n_cases: int, with_ray: bool) -> list[tuple[str, dict[str, float], float, float]]:
    """(configuration, event-log times, wall s, steady cases/min) for each configuration of one pipeline."""
    model, pattern, _ = PIPELINES[pipeline]
    work = Path(tempfile.mkdtemp(prefix=f"medseg-bench-batch-{pipeline}-"))
    try:
        tree = _make_tree(work / "scans", pattern, n_cases)
        configs = [("local, --workers 1", {"workers": 1}), ("local, --workers 2", {"workers": 2})]
        if with_ray:
            configs.append(("ray, 2 actors", {"workers": 2, "executor": "ray"}))
        rows, reference = [], None
        for i, (name, options) in enumerate(configs):
            out = work / f"out{i}"
            times, wall = _run(model, tree, out, **options)
            labels = _labels(out)
            if reference is None:
                reference = labels
            agree = labels.keys() == reference.keys() and all(np.array_equal(labels[k], reference[k]) for k in labels)
            assert agree, f"{pipeline}, {name}: label maps differ from the --workers 1 run"
            per_min = 60 * times["n_steady"] / times["steady_s"]
            rows.append((name, times, wall, per_min))
            print(
                f"{pipeline:7s} {name:22s} {per_min:7.1f} cases/min steady state, "
                f"{times['steady_s'] / times['n_steady']:.2f} s/case, start-up {times['startup_s']:.1f} s, "
                f"wall {wall:.1f} s, outputs agree: {agree}"
            )
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", type=int, default=120, help="cases per pipeline (enough that the first and last cases weigh little)"
    )
    parser.add_argument("--pipeline", action="append", choices=sorted(PIPELINES), help="repeatable; default: all")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray comparison (run on the CT pipeline)")
    args = parser.parse_args()
    pipelines = args.pipeline or list(PIPELINES)

    load_before = os.getloadavg()[0]
    results = {p: _bench(p, args.cases, with_ray=p == "ct" and not args.no_ray) for p in pipelines}
    load_after = os.getloadavg()[0]
    print(f"1-minute load average: {load_before:.1f} before, {load_after:.1f} after ({os.cpu_count()} cores)")

    lines = [
        (
            f"Light pipelines, {args.cases} cases each (copies of the sample data): "
            + "; ".join(f"`{p}`: {PIPELINES[p][2]}" for p in pipelines)
            + ". Steady-state throughput from the last worker ready to the last case end (event log); start-up "
            "(workers, imports, model; Ray instance) separately. All runs of a pipeline give identical label maps."
        ),
        "",
        "| pipeline | executor | cases/min | s/case | start-up (s) | wall (s) | vs --workers 1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    verdicts = []
    for pipeline, rows in results.items():
        base = rows[0][3]
        for name, times, wall, per_min in rows:
            lines.append(
                f"| {pipeline} | {name} | {per_min:.1f} | {times['steady_s'] / times['n_steady']:.2f} | "
                f"{times['startup_s']:.1f} | {wall:.1f} | {per_min / base:.2f}x |"
            )
        speedup = rows[1][3] / base
        verdict = "met" if speedup >= 1.7 else "NOT met"
        print(f"{pipeline}: --workers 2 vs --workers 1: {speedup:.2f}x cases/min (target >= 1.7x: {verdict})")
        verdicts.append(f"`{pipeline}` **{speedup:.2f}x** ({verdict})")
    lines += [
        "",
        (
            f"`--workers 2` vs `--workers 1` cases/min (target >= 1.7x): {', '.join(verdicts)}. "
            f"1-minute load average {load_before:.1f} before and {load_after:.1f} after the runs on "
            f"{os.cpu_count()} cores (a load above the core count means other processes shared the CPUs)."
        ),
    ]
    if "ct" in results and len(results["ct"]) > 2:
        _, local2, ray = results["ct"]
        overhead = ray[1]["steady_s"] / ray[1]["n_steady"] - local2[1]["steady_s"] / local2[1]["n_steady"]
        print(
            f"Ray vs local (ct, 2 workers each): overhead {overhead * 1000:+.0f} ms per case; "
            f"Ray start-up {ray[1]['startup_s']:.1f} s (ray.init {ray[1]['ray_init_s']:.1f} s, "
            f"actors load the model {ray[1]['model_load_s']:.1f} s) vs local start-up {local2[1]['startup_s']:.1f} s"
        )
        lines.append(
            f"Ray vs local executor (ct), 2 workers each: **{overhead * 1000:+.0f} ms per case** in the steady state; "
            f"Ray start-up {ray[1]['startup_s']:.1f} s (starting the local Ray instance {ray[1]['ray_init_s']:.1f} s, "
            f"actors importing torch and loading the model {ray[1]['model_load_s']:.1f} s) vs "
            f"{local2[1]['startup_s']:.1f} s for the local worker processes."
        )
    from benchmarks._record import record

    record("BENCHMARKS.md", "bench_batch", "## Batch throughput (`benchmarks/bench_batch.py`)\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
