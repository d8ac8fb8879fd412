"""The report: files written, figures for notebooks, and report.html rendered in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image as PILImage

import medseg
from medseg.metrics import evaluate_case
from medseg.metrics.cohort import CaseRecord
from medseg.report import case_figures, overlay, plot_volumes, write_report


@pytest.fixture(scope="module")
def cohort_tables(shared_data):
    """Two cases from the real 3 mm label map: a shifted prediction and one missing the liver."""
    ref = medseg.load(shared_data / "ct_3mm_reference_labels.nii.gz")
    scan = medseg.load(shared_data / "ct_3mm.nii.gz")
    a = ref.array[:, :, 5:25]  # a slab keeps the test quick
    ref = medseg.Image(a, spacing=ref.spacing)
    scan = medseg.Image(scan.array[:, :, 5:25], spacing=ref.spacing, intensity_unit="HU")
    shifted = ref.with_array(np.roll(a, 2, axis=0))
    no_liver = ref.with_array(np.where(a == 5, 0, a))
    tables, records = [], []
    for name, pred in (("shifted", shifted), ("no_liver", no_liver)):
        rows = evaluate_case(pred, ref, labels={1: "spleen", 5: "liver", 52: "aorta"}, case=name)
        rec = CaseRecord(name, f"{name}.nii.gz", "ref.nii.gz", notes=[f"note for {name}"])
        rec.figures = case_figures(scan, pred, ref, rows, instances=False, max_structures=2)
        tables.append(rows)
        records.append(rec)
    return pd.concat(tables, ignore_index=True), records


def test_write_report_outputs(cohort_tables, tmp_path):
    per_case, records = cohort_tables
    records = [*records, CaseRecord("broken", "b.nii.gz", "r.nii.gz", status="error", error="cannot read b.nii.gz")]
    paths = write_report(per_case, tmp_path, records, unpaired_pred=["extra.nii.gz"])
    back = pd.read_csv(paths["per_case"])
    assert len(back) == 6 and back["label"].tolist() == [1, 5, 52, 1, 5, 52]
    summary = json.loads(paths["summary"].read_text())
    liver = summary["labels"]["5"]["metrics"]["dice"]
    assert liver["n"] == 2 and liver["min"] == 0.0
    assert summary["cases_failed"] == {"broken": "cannot read b.nii.gz"}
    assert summary["unpaired_prediction_files"] == ["extra.nii.gz"]
    html = paths["report"].read_text()
    # worst case first: the failed one, then the case that lost the liver
    order = [m.group(1) for m in re.finditer(r"<div class='case' id='case-([^']+)'", html)]
    assert order == ["broken", "no_liver", "shifted"]
    assert html.count("data:image/png;base64,") >= 2 + 4  # box plots, volumes, 2 overlays per case
    assert "http://" not in html and "https://" not in html  # nothing fetched from the network
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes left no temporary files


def test_notebook_figures(cohort_tables, shared_data):
    per_case, _ = cohort_tables
    fig = plot_volumes(per_case)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    labels = medseg.load(shared_data / "cells_fluo" / "nuclei_labels.tif")
    fig2d = overlay(labels, labels, medseg.load(shared_data / "cells_fluo" / "nuclei.tif"), instances=True)
    assert len(fig2d.axes) == 1
    ref = medseg.load(shared_data / "ct_3mm_reference_labels.nii.gz")
    fig3d = overlay(ref, ref, label=5, title="liver")
    assert [ax.get_title().split()[0] for ax in fig3d.axes] == ["axial", "coronal", "sagittal"]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") or os.environ.get("MEDSEG_REQUIRE_SHARED_DATA", "") not in ("", "0"):
            pytest.fail(msg + "; .ci/run installs it")
        pytest.skip(msg)
    return exe


@pytest.mark.slow
def test_report_renders_in_headless_chromium(cohort_tables, tmp_path):
    per_case, records = cohort_tables
    paths = write_report(per_case, tmp_path / "out", records)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = paths["report"].resolve().as_uri()
    # after the page's script ran: are the tables there, and did every image decode?
    probe = tmp_path / "probe.html"
    probe.write_text(
        "<html><body><iframe id='f' src='" + url + "' width='1200' height='800'></iframe><script>"
        "document.getElementById('f').onload=function(){var d=this.contentDocument;"
        "var imgs=Array.from(d.images);"
        # click the cohort table's dice header once (ascending) and read the column back
        "var th=Array.from(d.querySelectorAll('#cohort th')).find(function(t){return t.textContent==='dice';});"
        "var col=Array.from(th.parentNode.children).indexOf(th);th.click();"
        "var dice=Array.from(d.querySelectorAll('#cohort tbody tr')).map(function(r){return r.cells[col].textContent;});"
        "var out=document.createElement('pre');out.id='result';"
        "out.textContent=JSON.stringify({tables:d.querySelectorAll('table').length,"
        "rows:d.querySelectorAll('#cohort tbody tr').length,images:imgs.length,dice:dice,"
        "decoded:imgs.filter(function(i){return i.complete&&i.naturalWidth>0;}).length});"
        "document.body.appendChild(out);};</script></body></html>"
    )
    dom = subprocess.run(
        [
            _chromium(),
            *flags,
            "--allow-file-access-from-files",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = re.search(r"<pre id=\"result\">(.*?)</pre>", dom.stdout)
    assert found, dom.stderr[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result["tables"] == 2 and result["rows"] == len(per_case)
    assert result["images"] >= 6 and result["decoded"] == result["images"]
    shown = [float(v) for v in result["dice"] if v]
    assert shown == sorted(shown) and len(shown) == per_case["dice"].notna().sum()
    assert all(result["dice"][: len(shown)])  # undefined (blank) cells sort last
    shot = tmp_path / "report.png"
    subprocess.run(
        [_chromium(), *flags, "--window-size=1200,1600", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(PILImage.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1200)
    assert (pixels < 128).any(axis=2).mean() > 0.01  # text, tables and figures, not a blank page
