"""Shared fixtures: the real data in ../shared/data and the project's own sample data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# fixtures of the DICOM SEG / RTSTRUCT / PACS tests (the shared CT, the demo model run once, dciodvfy, Orthanc)
pytest_plugins = ["dicom_support.fixtures"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
SAMPLE_DATA = REPO / "sample_data"


def _require_shared() -> bool:
    return os.environ.get("MEDSEG_REQUIRE_SHARED_DATA", "") not in ("", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips without it, fails instead when MEDSEG_REQUIRE_SHARED_DATA=1 (CI)."""
    if not SHARED_DATA.is_dir():
        msg = f"real sample data not found at {SHARED_DATA} (see ../shared/data/README.md)"
        if _require_shared():
            pytest.fail(msg + " and MEDSEG_REQUIRE_SHARED_DATA=1")
        pytest.skip(msg)
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The project's own generated sample data with exact ground truth."""
    return SAMPLE_DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
