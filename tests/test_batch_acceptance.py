"""Issue 6 acceptance: ``medseg batch`` as a subprocess over a mixed real tree, killed with SIGKILL and resumed.

The tree mixes the sample CT phantoms (NIfTI and DICOM), a copy of the real
abdominal CT series from ../shared/data, and broken files from pydicom's test
corpus (truncated pixel data, no pixel data, a non-image SR).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_batch import BROKEN, ct_model_dir, log_events, make_tree, read_csv, tree_hashes

from medseg.batch import EXIT_OK, EXIT_SOME_FAILED, Manifest
from medseg.batch.fingerprint import file_sha256
from medseg.io import load

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("batch_acceptance")]

REPO = Path(__file__).resolve().parents[1]
N_BROKEN = len(BROKEN) + 1  # + the file written without pixel data


def _command(model: Path, tree: Path, out: Path, log: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from medseg.cli import main; main()", "batch", str(model), str(tree), str(out),
            "--quiet", "--log-json", str(log), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)


def _kill_when(cmd: list[str], log: Path, event: str, nth: int, delay_s: float) -> list[dict]:
    """Start the batch, SIGKILL it ``delay_s`` after the ``nth`` ``event`` appears in its log; returns the log."""
    log.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and sum(f'"event": "{event}"' in line for line in log.read_text().splitlines()) >= nth:
                time.sleep(delay_s)
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"batch ended before the kill point ({event} #{nth})"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]


def _check_consistent(out: Path) -> Manifest:
    """Every case the manifest calls done has all its outputs, byte for byte as recorded, and they load."""
    manifest = Manifest(out)
    for rec in manifest.records.values():
        for o in rec.outputs.values():
            path = out / o["path"]
            assert path.stat().st_size == o["bytes"] and file_sha256(path) == o["sha256"], path
            if path.name.endswith(".nii.gz"):
                load(path)
    return manifest


@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory: pytest.TempPathFactory, sample_data: Path, shared_data: Path) -> Path:
    tree = make_tree(tmp_path_factory.mktemp("acceptance") / "scans", sample_data)
    shutil.copytree(shared_data / "ct_abdomen_dicom", tree / "real" / "ct_abdomen_dicom")
    return tree


def test_sigkill_at_several_moments_then_resume(mixed_tree: Path, sample_data: Path, tmp_path: Path) -> None:
    model = ct_model_dir(sample_data)
    inputs_before = tree_hashes(mixed_tree)
    out, log = tmp_path / "out", tmp_path / "log.jsonl"
    cmd = _command(model, mixed_tree, out, log)

    # during the first model run, right after a case was recorded, and as the third run's first case (a later
    # case: the earlier ones are done) starts -- on a fast machine that run has too few cases left for a second one
    kill_points = [("case_start", 1, 0.5), ("case_done", 1, 0.0), ("case_start", 1, 0.0)]
    finished: set[str] = set()
    for event, nth, delay in kill_points:
        _kill_when(cmd, log, event, nth, delay)
        manifest = _check_consistent(out)
        assert finished <= set(manifest.records), "a case recorded as done was lost by a later kill"
        finished = set(manifest.records)

    done = _run(cmd)
    assert done.returncode == EXIT_SOME_FAILED, done.stderr
    manifest = _check_consistent(out)
    sources = {r["case_id"]: r["source"] for r in read_csv(out / "case_sources.csv")}
    good = {c for c, s in sources.items() if not s.startswith("dicom") or s == "dicom/phantom"}
    assert set(manifest.records) == good and len(good) == 4  # 2 NIfTI phantoms, DICOM phantom, real CT series
    assert len(manifest.path.read_text().splitlines()) == len(good)  # compacted: one record per case
    failures = read_csv(out / "failures.csv")
    assert sorted(f["case_id"] for f in failures) == sorted(set(sources) - good) and len(failures) == N_BROKEN

    # each case's outputs exist exactly once: no leftover temporary files, no stray case folders
    assert sorted(p.name for p in (out / "cases").iterdir()) == sorted(good)
    for case_id in good:
        files = sorted(p.name for p in (out / "cases" / case_id).iterdir())
        assert files == ["instances.nii.gz", "labels.nii.gz", "measurements.csv"], (case_id, files)
    assert not list(out.rglob(".*.tmp-*"))
    real = next(c for c, s in sources.items() if s == "real/ct_abdomen_dicom")
    assert load(out / "cases" / real / "labels.nii.gz").same_grid(load(mixed_tree / "real" / "ct_abdomen_dicom"))
    assert tree_hashes(mixed_tree) == inputs_before

    # an unchanged tree: no model work at all
    again = _run(cmd)
    assert again.returncode == EXIT_SOME_FAILED
    events = log_events(log)
    assert not [e for e in events if e["event"] == "case_start"]
    assert {e["case_id"] for e in events if e["event"] == "case_skipped"} == good

    # without the broken files every case is done: exit code 0, an empty failures.csv
    ok = _run(_command(model, mixed_tree, out, log, "--exclude", "dicom/*.dcm"))
    assert ok.returncode == EXIT_OK, ok.stderr
    assert read_csv(out / "failures.csv") == []



def test_a_worker_process_killed_mid_case_costs_only_that_case(tmp_path: Path, sample_data: Path) -> None:
    import threading

    from medseg.batch import run_batch

    model = ct_model_dir(sample_data)
    tree = make_tree(tmp_path / "scans", sample_data, broken=False, n_phantoms=3)
    out, log = tmp_path / "out", tmp_path / "log.jsonl"
    runs: list = []
    thread = threading.Thread(target=lambda: runs.append(run_batch(model, tree, out, workers=2, log_json=log)))
    thread.start()
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and thread.is_alive() and time.monotonic() < deadline:
        events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        pids = {e["worker"]: e["pid"] for e in events if e["event"] == "worker_ready"}
        started = [e for e in events if e["event"] == "case_start" and e["worker"] in pids]
        if started:
            victim = started[0]
            os.kill(pids[victim["worker"]], signal.SIGKILL)
        time.sleep(0.02)
    thread.join(timeout=300)
    assert victim is not None and runs, "the batch finished before a worker could be killed"
    result = runs[0]
    # the case the killed worker was on (normally the victim's; a later one if the victim had just finished)
    assert [f["error_type"] for f in result.failures] == ["WorkerDied"]
    lost = result.failures[0]["case_id"]
    assert sorted(result.done) == sorted({p.case.case_id for p in result.plan} - {lost})
    assert result.exit_code == EXIT_SOME_FAILED
    again = run_batch(model, tree, out)  # the failed case is retried and now succeeds
    assert again.done == [lost] and again.exit_code == EXIT_OK
