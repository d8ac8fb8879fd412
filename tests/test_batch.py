"""medseg.batch: discovery and case ids, fingerprints, manifest, resume, failure isolation, outputs, CLI.

The runs use the committed CT demo model on the sample phantoms, so every case
goes through the real pipeline (model, post-processing, measurement, evaluation).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from medseg.batch import EXIT_OK, EXIT_SOME_FAILED, Manifest, discover_cases, run_batch
from medseg.batch.fingerprint import content_fingerprint, stat_fingerprint
from medseg.batch.manifest import CaseRecord
from medseg.io import load

BROKEN = {"truncated": "MR_truncated.dcm", "non_image": "test-SR.dcm"}
pytestmark = pytest.mark.xdist_group("batch")  # the tests share one batch run (module fixture)


# ---- fixtures and helpers (also used by test_batch_acceptance.py and test_batch_ray.py) ---------------------------
def ct_model_dir(sample_data: Path) -> Path:
    """The committed 3D CT organ demo model."""
    path = sample_data / "models" / "ct_organs"
    assert (path / "model_card.json").is_file(), f"demo model missing at {path}"
    return path


def write_no_pixel_data(target: Path) -> Path:
    """A CT image header whose pixel data was removed (a broken image file)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["medseg-batch-test-no-pixels"])
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)
    return target


def make_tree(root: Path, sample_data: Path, *, broken: bool = True, n_phantoms: int = 2) -> Path:
    """A scan tree: phantoms under a patient-named folder, the phantom DICOM series, and broken DICOM files."""
    images = sorted((sample_data / "ct_organs" / "imagesTs").glob("*.nii.gz"))
    images += sorted((sample_data / "ct_organs" / "imagesTr").glob("*.nii.gz"))
    for img in images[:n_phantoms]:
        dst = root / "Doe^John" / img.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(img, dst)
    shutil.copytree(sample_data / "ct_organs_dicom", root / "dicom" / "phantom")
    if broken:
        for name in BROKEN.values():
            shutil.copy2(get_testdata_file(name), root / "dicom" / name)
        write_no_pixel_data(root / "dicom" / "no_pixels.dcm")
    (root / "notes.txt").write_text("not a scan\n")
    return root


def tree_hashes(root: Path) -> dict[str, str]:
    """Relative path -> content fingerprint of every file under ``root``."""
    return {p.relative_to(root).as_posix(): content_fingerprint([p]) for p in sorted(root.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def log_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def model_dir(sample_data: Path) -> Path:
    return ct_model_dir(sample_data)


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory: pytest.TempPathFactory, sample_data: Path, model_dir: Path) -> dict:
    """One batch over a small mixed tree, shared by the tests that inspect its outputs."""
    root = tmp_path_factory.mktemp("batch")
    tree = make_tree(root / "scans", sample_data)
    gt = root / "gt"
    gt.mkdir()
    for p in (tree / "Doe^John").glob("*.nii.gz"):
        label = sample_data / "ct_organs" / ("labelsTs" if (sample_data / "ct_organs" / "imagesTs" / p.name).exists() else "labelsTr") / p.name
        (gt / "Doe^John").mkdir(exist_ok=True)
        shutil.copy2(label, gt / "Doe^John" / p.name)
    before = tree_hashes(tree)
    out = root / "out"
    result = run_batch(model_dir, tree, out, gt_dir=gt, log_json=root / "run1.jsonl")
    return {"root": root, "tree": tree, "gt": gt, "out": out, "result": result, "before": before}


# ---- discovery and case ids --------------------------------------------------------------------------------------------
def test_discovery_finds_every_scan_and_each_broken_file(tmp_path: Path, sample_data: Path) -> None:
    tree = make_tree(tmp_path / "scans", sample_data)
    shutil.copy2(get_testdata_file("CT_small.dcm"), tree / "dicom" / "phantom" / "other_series.dcm")  # 2 series, 1 folder
    (tree / "Doe^John" / "photo.png").write_bytes(b"\x89PNG not really")
    found = discover_cases(tree, spatial_dims=3)
    kinds = sorted((c.kind, c.source) for c in found.cases)
    assert kinds == sorted([
        ("volume", "Doe^John/case_006.nii.gz"), ("volume", "Doe^John/case_007.nii.gz"),
        ("dicom_series", "dicom/phantom"), ("dicom_series", "dicom/phantom"),
        ("dicom_series", "dicom"), ("dicom_series", "dicom"), ("dicom_series", "dicom"),  # truncated, SR, no pixels
    ])
    assert "notes.txt" in found.ignored and "Doe^John/photo.png" in found.ignored  # 2D images: 2D workflows only
    phantom = [c for c in found.cases if c.source == "dicom/phantom" and len(c.files) > 1]
    assert len(phantom) == 1 and len(phantom[0].files) == len(list((sample_data / "ct_organs_dicom").glob("*.dcm")))
    assert any(c.source == "Doe^John/photo.png" for c in discover_cases(tree, spatial_dims=2).cases)


def test_case_ids_are_stable_safe_and_carry_no_names(tmp_path: Path, sample_data: Path) -> None:
    tree = make_tree(tmp_path / "scans", sample_data, broken=False)
    ids = [c.case_id for c in discover_cases(tree, spatial_dims=3).cases]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[sf]-[0-9a-f]{12}", i) for i in ids), ids
    assert not any("Doe" in i or "John" in i for i in ids)
    # the same tree elsewhere gives the same ids; a DICOM series keeps its id when its folder is renamed
    moved = tmp_path / "elsewhere"
    shutil.copytree(tree, moved)
    assert [c.case_id for c in discover_cases(moved, spatial_dims=3).cases] == ids
    series_id = next(c.case_id for c in discover_cases(tree, spatial_dims=3).cases if c.kind == "dicom_series")
    (moved / "dicom" / "phantom").rename(moved / "dicom" / "renamed")
    assert series_id in {c.case_id for c in discover_cases(moved, spatial_dims=3).cases}
    readable = {c.case_id for c in discover_cases(tree, spatial_dims=3, id_style="path").cases}
    assert "Doe_John_case_006" in readable


def test_discovery_skips_the_output_folder_and_excluded_paths(tmp_path: Path, sample_data: Path) -> None:
    tree = make_tree(tmp_path / "scans", sample_data, broken=False)
    (tree / "results").mkdir()
    shutil.copy2(tree / "Doe^John" / "case_006.nii.gz", tree / "results" / "labels.nii.gz")
    found = discover_cases(tree, spatial_dims=3, skip_dirs=[tree / "results"], exclude=["*case_007*"])
    sources = {c.source for c in found.cases}
    assert sources == {"Doe^John/case_006.nii.gz", "dicom/phantom"}


# ---- fingerprints and manifest ------------------------------------------------------------------------------------------
def test_stat_fingerprint_sees_touch_content_fingerprint_does_not(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"1234")
    stat0, content0 = stat_fingerprint([f]), content_fingerprint([f])
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    assert stat_fingerprint([f]) != stat0 and content_fingerprint([f]) == content0
    f.write_bytes(b"1235")
    assert content_fingerprint([f]) != content0


def test_manifest_ignores_a_torn_line_and_keeps_the_latest_record(tmp_path: Path) -> None:
    m = Manifest(tmp_path)
    m.append(CaseRecord("c1", "s1", "h1", "p1"))
    m.append(CaseRecord("c2", "s2", "h2", "p1"))
    with open(m.path, "a") as fh:
        fh.write('{"case_id": "c3", "stat_fp": "s3", "cont')  # a run killed mid-line
    reread = Manifest(tmp_path)
    assert set(reread.records) == {"c1", "c2"} and reread.torn_lines == 1
    reread.append(CaseRecord("c1", "s1b", "h1b", "p1"))  # starts on a fresh line after the torn one
    again = Manifest(tmp_path)
    assert again.get("c1").stat_fp == "s1b" and again.torn_lines == 1
    again.compact()
    lines = again.path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)


# ---- a real run ---------------------------------------------------------------------------------------------------------
def test_good_cases_give_outputs_broken_ones_failures(batch_run: dict, sample_data: Path) -> None:
    result, out = batch_run["result"], batch_run["out"]
    assert result.exit_code == EXIT_SOME_FAILED
    failures = read_csv(out / "failures.csv")
    assert {f["source"] for f in failures} == {"dicom"} and len(failures) == 3
    assert {f["error_type"] for f in failures} == {"ReadError", "NotAnImageError"}
    assert all(f["message"] for f in failures)
    sources = {r["case_id"]: r["source"] for r in read_csv(out / "case_sources.csv")}
    done = sorted(sources[c] for c in result.done)
    assert done == ["Doe^John/case_006.nii.gz", "Doe^John/case_007.nii.gz", "dicom/phantom"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_cases"], summary["n_ok"], summary["n_failed"]) == (6, 3, 3)
    assert "Doe" not in json.dumps(summary)


def test_outputs_lie_on_the_input_grid_and_measurements_match_them(batch_run: dict) -> None:
    out, tree = batch_run["out"], batch_run["tree"]
    sources = {r["case_id"]: r["source"] for r in read_csv(out / "case_sources.csv")}
    cohort = read_csv(out / "measurements.csv")
    for case_id in batch_run["result"].done:
        image = load(tree / sources[case_id])
        labels = load(out / "cases" / case_id / "labels.nii.gz")
        instances = load(out / "cases" / case_id / "instances.nii.gz")
        assert labels.same_grid(image) and instances.same_grid(image)
        rows = [r for r in cohort if r["case_id"] == case_id and r["level"] == "label"]
        counts = np.bincount(labels.array.ravel().astype(np.int64))
        assert {int(r["label"]): int(r["voxel_count"]) for r in rows} == {v: int(n) for v, n in enumerate(counts) if v and n}
        for r in rows:
            assert float(r["volume_ml"]) == pytest.approx(int(r["voxel_count"]) * image.voxel_volume_mm3 / 1000, rel=1e-6)


def test_metrics_against_ground_truth(batch_run: dict) -> None:
    from medseg.metrics.evaluate import evaluate_case

    out, gt = batch_run["out"], batch_run["gt"]
    rows = read_csv(out / "metrics.csv")
    sources = {r["case_id"]: r["source"] for r in read_csv(out / "case_sources.csv")}
    evaluated = {r["case_id"] for r in rows}
    assert evaluated == {c for c in batch_run["result"].done if sources[c].endswith(".nii.gz")}
    for case_id in evaluated:
        pred = load(out / "cases" / case_id / "labels.nii.gz")
        ref = load(gt / sources[case_id])
        got = {int(r["label"]): float(r["dice"]) for r in rows if r["case_id"] == case_id}
        expected = evaluate_case(pred.array, ref.array, labels=sorted(got), spacing=ref.spacing, surface=False)
        assert len(expected) == len(got) > 0
        for _, e in expected.iterrows():
            assert got[int(e["label"])] == pytest.approx(e["dice"], abs=1e-9, nan_ok=True)
    report = (out / "report" / "report.html").read_text()
    assert all(case_id in report for case_id in evaluated)


def test_rerun_does_no_model_work_and_inputs_are_unchanged(batch_run: dict, model_dir: Path) -> None:
    root, tree, out = batch_run["root"], batch_run["tree"], batch_run["out"]
    manifest_before = Manifest(out).records
    result = run_batch(model_dir, tree, out, gt_dir=batch_run["gt"], log_json=root / "run2.jsonl")
    events = log_events(root / "run2.jsonl")
    assert not [e for e in events if e["event"] == "case_start"]
    skipped = {e["case_id"] for e in events if e["event"] == "case_skipped"}
    assert skipped == set(batch_run["result"].done) and all(e["reason"] == "up to date" for e in events if e["event"] == "case_skipped")
    assert result.exit_code == EXIT_SOME_FAILED  # the broken inputs are retried and fail again
    assert Manifest(out).records == manifest_before
    assert tree_hashes(tree) == batch_run["before"]


def test_touched_input_is_skipped_changed_input_redone(tmp_path: Path, sample_data: Path, model_dir: Path) -> None:
    tree = make_tree(tmp_path / "scans", sample_data, broken=False, n_phantoms=1)
    (tree / "dicom").rename(tmp_path / "unused")
    out = tmp_path / "out"
    assert run_batch(model_dir, tree, out).exit_code == EXIT_OK
    scan = tree / "Doe^John" / "case_006.nii.gz"
    os.utime(scan, ns=(2_000_000_000, 2_000_000_000))  # same bytes, new mtime
    r = run_batch(model_dir, tree, out, log_json=tmp_path / "touch.jsonl")
    assert r.done == [] and len(r.up_to_date) == 1
    img = load(scan)
    img.array[10:20, 10:20, 10:20] = 1000  # different content
    from medseg.io import save

    save(img, scan)
    r = run_batch(model_dir, tree, out)
    assert len(r.done) == 1 and r.plan[0].reason == "input changed"
    assert len(run_batch(model_dir, tree, out, force=True).done) == 1


# ---- command line -------------------------------------------------------------------------------------------------------
def test_cli_exit_codes_and_dry_run(tmp_path: Path, sample_data: Path, model_dir: Path) -> None:
    from medseg.cli import app

    tree = make_tree(tmp_path / "scans", sample_data, n_phantoms=1)
    (tree / "dicom" / "phantom").rename(tmp_path / "unused")
    out = tmp_path / "out"
    runner = CliRunner()
    dry = runner.invoke(app, ["batch", str(model_dir), str(tree), str(out), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "4 cases: 4 to process" in dry.output and not out.exists()
    res = runner.invoke(app, ["batch", str(model_dir), str(tree), str(out), "--quiet"])
    assert res.exit_code == EXIT_SOME_FAILED, res.output
    assert len(read_csv(out / "failures.csv")) == 3
    res = runner.invoke(app, ["batch", str(model_dir), str(tree), str(out), "--quiet", "--exclude", "*.dcm"])
    assert res.exit_code == EXIT_OK, res.output
    assert read_csv(out / "failures.csv") == []


def test_run_errors_exit_with_code_two(tmp_path: Path, sample_data: Path, model_dir: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from medseg.cli import main

    tree = make_tree(tmp_path / "scans", sample_data, broken=False, n_phantoms=1)
    for args, message in [((model_dir, tmp_path / "nope"), "input folder not found"),
                          ((tmp_path, tree), "model_card.json")]:
        monkeypatch.setattr("sys.argv", ["medseg", "batch", *map(str, args), str(tmp_path / "out")])
        with pytest.raises(SystemExit) as exc:
            main()
        assert exc.value.code == 2 and message in capsys.readouterr().err
