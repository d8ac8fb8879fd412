"""Fixtures shared by the DICOM SEG, RTSTRUCT and PACS tests (imported by those test modules).

The shared abdominal CT is segmented by the committed demo model once per test
process: :class:`CachedSegmenter` remembers each output by the input's voxels
and geometry, so a batch that reads the same series again (from a PACS, from
a local folder) reuses it. Everything else of the pipeline runs for real.
Those test modules share the xdist group ``dicom_pacs`` so one worker runs them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import medseg
from medseg.io.image import Image, LabelMap

REPO = Path(__file__).resolve().parents[2]
CT_MODEL = REPO / "sample_data" / "models" / "ct_organs"
sys.path.insert(0, str(REPO / "tests" / "plugins"))


def in_ci() -> bool:
    """Whether the tests run in CI (``CI`` set to a true value), where missing tools fail instead of skipping."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, what: str, install: str) -> None:
    """Skip (locally) or fail (in CI) when a tool the test needs is missing."""
    if available:
        return
    if in_ci():
        pytest.fail(f"{what} is not installed, and CI must run this test ({install}; .ci/run installs it)")
    pytest.skip(f"{what} is not installed ({install})")


def require_dciodvfy() -> str:
    """Path of dicom3tools' dciodvfy (skip locally / fail in CI without it)."""
    path = shutil.which("dciodvfy")
    require(path is not None, "dciodvfy", "apt-get install dicom3tools")
    return str(path)


class CachedSegmenter:
    """A Segmenter that segments each distinct input (voxels + grid) once and replays the result after."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.label_names = inner.name, dict(inner.label_names)
        self.spatial_dims, self.in_channels, self.postprocess = inner.spatial_dims, inner.in_channels, inner.postprocess
        self.calls = 0
        self._done: dict[str, np.ndarray] = {}

    def fingerprint(self) -> str:
        return str(self.inner.fingerprint())

    def segment(self, image: Image, **options: Any) -> LabelMap:
        key = hashlib.sha256(np.ascontiguousarray(image.array).tobytes() + image.affine.round(4).tobytes()).hexdigest()
        if key not in self._done:
            self.calls += 1
            self._done[key] = self.inner.segment(image, **options).array
        return image.with_labels(self._done[key].copy(), self.label_names)


@pytest.fixture(scope="session")
def ct_folder(shared_data: Path) -> Path:
    """The shared anonymised abdominal CT series (blank Study/Series/SOP Instance UIDs)."""
    return shared_data / "ct_abdomen_dicom"


@pytest.fixture(scope="session")
def ct_image(ct_folder: Path) -> Image:
    return medseg.load(ct_folder)


@pytest.fixture(scope="session")
def ct_model() -> CachedSegmenter:
    """The committed demo model (phantom-trained: not anatomically right on real CT, the plumbing is tested)."""
    return CachedSegmenter(medseg.load_segmenter(str(CT_MODEL)))


@pytest.fixture(scope="session")
def reference_labels(shared_data: Path, ct_image: Image) -> LabelMap:
    """TotalSegmentator's labels of the shared CT on its DICOM grid (31 sparse label values), with their names."""
    import json

    from medseg.io.resample import resample_to

    names = {int(k): v for k, v in json.loads((shared_data / "reference_label_names.json").read_text()).items()}
    moved = resample_to(medseg.load_labels(shared_data / "ct_abdomen_dicom_reference_labels.nii.gz"), ct_image)
    present = {int(v) for v in np.unique(moved.array) if v}
    return ct_image.with_labels(moved.array, {v: names[v] for v in present})
