"""A third-party Segmenter, registered by an entry point without touching medseg, through every command.

The plugin (tests/plugins/medseg_threshold_plugin.py) is put on PYTHONPATH with a
``.dist-info`` folder whose ``entry_points.txt`` names it in the
``medseg.segmenters`` group, as ``pip install`` of a plugin package would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage

import medseg

PLUGIN_SOURCE = Path(__file__).parent / "plugins" / "medseg_threshold_plugin.py"
MEDSEG = Path(sys.executable).with_name("medseg")
THRESHOLD = 150.0


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment with the plugin installed as a distribution (module + dist-info with an entry point)."""
    site = tmp_path_factory.mktemp("plugin_site")
    shutil.copy(PLUGIN_SOURCE, site / PLUGIN_SOURCE.name)
    info = site / "medseg_threshold_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: medseg-threshold-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[medseg.segmenters]\nthreshold = medseg_threshold_plugin:KIND\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _medseg(env: dict[str, str], *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MEDSEG), *map(str, args)], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _ct_cases(sample_data: Path, folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(sample_data / "ct_organs" / "imagesTs" / f"{name}.nii.gz", folder / f"{name}.nii.gz")


def test_plugin_segments_batches_resumes_and_is_a_baseline(sample_data: Path, tmp_path: Path,
                                                           plugin_env: dict[str, str]) -> None:
    scans = tmp_path / "scans"
    _ct_cases(sample_data, scans, ["case_006"])
    gt = sample_data / "ct_organs" / "labelsTs"

    seg = _medseg(plugin_env, "segment", f"threshold:{THRESHOLD:g}", scans / "case_006.nii.gz", "--out", tmp_path / "seg")
    assert seg.returncode == 0, seg.stderr
    written = medseg.load(tmp_path / "seg" / "case_006.nii.gz")
    scan = medseg.load(scans / "case_006.nii.gz")
    assert written.same_grid(scan)
    assert np.array_equal(written.array, (scan.array > THRESHOLD).astype(np.uint8))

    out = tmp_path / "batch"
    first = _medseg(plugin_env, "batch", f"threshold:{THRESHOLD:g}", scans, out, "--gt", gt, "--readable-ids")
    assert first.returncode == 0, first.stderr
    assert "1 processed, 0 up to date" in first.stderr
    labels = medseg.load(out / "cases" / "case_006" / "labels.nii.gz")
    assert np.array_equal(labels.array, (scan.array > THRESHOLD).astype(np.uint8))
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics.case_id) == {"case_006"} and (out / "report" / "report.html").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["name"] == f"threshold {THRESHOLD:g}"

    _ct_cases(sample_data, scans, ["case_007"])  # resume: only the new case is processed
    second = _medseg(plugin_env, "batch", f"threshold:{THRESHOLD:g}", scans, out, "--gt", gt, "--readable-ids")
    assert second.returncode == 0, second.stderr
    assert "1 processed, 1 up to date" in second.stderr
    assert set(pd.read_csv(out / "metrics.csv").case_id) == {"case_006", "case_007"}

    report = tmp_path / "report"
    ev = _medseg(plugin_env, "evaluate", out / "cases" / "case_006" / "labels.nii.gz", gt / "case_006.nii.gz",
                 "--out", report, "--baseline", f"threshold:{THRESHOLD:g}", "--images", scans / "case_006.nii.gz",
                 "--no-overlays")
    assert ev.returncode == 0, ev.stderr
    baseline_dirs = list((report / "baselines").iterdir())
    assert len(baseline_dirs) == 1 and (baseline_dirs[0] / "report.html").is_file()
    base = pd.read_csv(baseline_dirs[0] / "per_case.csv")
    main = pd.read_csv(report / "per_case.csv")
    assert np.allclose(base.dice.to_numpy(), main.dice.to_numpy(), equal_nan=True)  # the same segmenter twice
    truth = medseg.load(gt / "case_006.nii.gz").array
    pred = scan.array > THRESHOLD
    liver = base[base.label == 1].iloc[0]
    expected = 2 * np.sum(pred & (truth == 1)) / (pred.sum() + (truth == 1).sum())
    assert liver.dice == pytest.approx(expected, abs=1e-12)


def test_png_radiograph_gives_a_png_mask_that_overlays_it(sample_data: Path, tmp_path: Path,
                                                          plugin_env: dict[str, str]) -> None:
    radiograph = sample_data / "xray_lungs" / "imagesTs" / "case_006.png"
    run = _medseg(plugin_env, "segment", "threshold:100", radiograph, "--out", tmp_path)
    assert run.returncode == 0, run.stderr
    mask_path = tmp_path / "case_006.png"
    assert run.stdout.strip() == str(mask_path)
    with PILImage.open(radiograph) as src, PILImage.open(mask_path) as mask:
        assert mask.size == src.size and mask.mode == "L"
        pixels, mask_pixels = np.asarray(src.convert("L")), np.asarray(mask)
    assert pixels.shape != pixels.T.shape or not np.array_equal(pixels, pixels.T)  # an asymmetric picture
    assert np.array_equal(mask_pixels, (pixels > 100).astype(np.uint8))  # row for row, column for column
    nifti = _medseg(plugin_env, "segment", "threshold:100", radiograph, "--out", tmp_path / "nii", "--format", "nifti")
    assert nifti.returncode == 0, nifti.stderr
    assert np.array_equal(medseg.load(tmp_path / "nii" / "case_006.nii.gz").array, mask_pixels.T)


def test_unknown_scheme_is_a_medseg_error(tmp_path: Path, plugin_env: dict[str, str]) -> None:
    run = _medseg(plugin_env, "segment", "nosuch:1", tmp_path, "--out", tmp_path / "o")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "unknown segmenter scheme 'nosuch' (known: " in run.stderr and "threshold" in run.stderr  # the plugin's scheme is listed


@pytest.mark.slow
def test_a_hanging_case_times_out_and_the_batch_goes_on(sample_data: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(PLUGIN_SOURCE.parent))
    from medseg_threshold_plugin import HangsAboveThreshold

    from medseg.batch import run_batch

    scans = tmp_path / "scans"
    _ct_cases(sample_data, scans, ["case_006"])
    scan = medseg.load(scans / "case_006.nii.gz")
    medseg.save(scan.with_array(np.clip(scan.array, -1024, 400)), scans / "dim.nii.gz")
    result = run_batch(HangsAboveThreshold(500.0), scans, tmp_path / "out", id_style="path", case_timeout_s=8)
    assert result.exit_code == 3 and result.done == ["dim"]
    failures = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert failures.case_id.tolist() == ["case_006"] and failures.error_type.tolist() == ["CaseTimeout"]
    assert "--case-timeout 8 s" in failures.message[0]
    assert (tmp_path / "out" / "cases" / "dim" / "labels.nii.gz").is_file()
    assert not (tmp_path / "out" / "cases" / "case_006").exists()
