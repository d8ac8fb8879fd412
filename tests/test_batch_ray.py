"""The Ray executor on a local Ray instance (loopback only): same outputs, manifest and failures as the local one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_batch import ct_model_dir, log_events, make_tree, read_csv

from medseg.batch import EXIT_SOME_FAILED, Manifest, run_batch
from medseg.io import load

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


@pytest.fixture(scope="module")
def local_ray() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def test_ray_run_equals_local_run_and_reports_worker_failures(tmp_path: Path, sample_data: Path, local_ray: None) -> None:
    model = ct_model_dir(sample_data)
    tree = make_tree(tmp_path / "scans", sample_data, n_phantoms=1)
    local = run_batch(model, tree, tmp_path / "local")
    remote = run_batch(model, tree, tmp_path / "ray", executor="ray", workers=2, log_json=tmp_path / "ray.jsonl")

    assert remote.exit_code == local.exit_code == EXIT_SOME_FAILED
    assert sorted(remote.done) == sorted(local.done) and len(local.done) == 2
    fail_local = {(f["case_id"], f["error_type"], f["stage"]) for f in read_csv(tmp_path / "local" / "failures.csv")}
    fail_ray = {(f["case_id"], f["error_type"], f["stage"]) for f in read_csv(tmp_path / "ray" / "failures.csv")}
    assert fail_ray == fail_local and len(fail_ray) == 3  # the broken files failed inside Ray actors, the batch went on

    for case_id in local.done:
        for name in ("labels.nii.gz", "instances.nii.gz"):
            a, b = load(tmp_path / "local" / "cases" / case_id / name), load(tmp_path / "ray" / "cases" / case_id / name)
            assert a.same_grid(b) and np.array_equal(a.array, b.array), (case_id, name)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "local" / "measurements.csv"),
                                  pd.read_csv(tmp_path / "ray" / "measurements.csv"))
    m_local, m_ray = Manifest(tmp_path / "local").records, Manifest(tmp_path / "ray").records
    assert {k: (r.content_fp, r.pipeline_fp) for k, r in m_local.items()} == {
        k: (r.content_fp, r.pipeline_fp) for k, r in m_ray.items()}

    again = run_batch(model, tree, tmp_path / "ray", executor="ray", workers=2, log_json=tmp_path / "ray2.jsonl")
    assert sorted(again.up_to_date) == sorted(local.done)
    assert not [e for e in log_events(tmp_path / "ray2.jsonl") if e["event"] == "case_start" and e["case_id"] in local.done]
