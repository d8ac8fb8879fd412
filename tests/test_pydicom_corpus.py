"""Every file of pydicom's test corpus either loads or raises a MedsegError; nothing else escapes.

The corpus holds real and deliberately broken objects: compressed syntaxes,
big endian, multi-frame, radiographs, RT objects, SR, waveforms, DICOMDIRs,
truncated files, and plain non-DICOM files (with the ``pydicom-data`` test
extra installed, ~260 entries, folders included).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file, get_testdata_files

from medseg.errors import MedsegError, NotAnImageError, ReadError
from medseg.io.dicom import load_dicom


def _mtimes(paths: list[Path]) -> dict[Path, int]:
    return {p: os.stat(p).st_mtime_ns for p in paths if p.is_file()}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_corpus_file_loads_or_raises_a_medseg_error():
    paths = sorted({Path(p) for p in get_testdata_files()})
    before = _mtimes(paths)
    outcomes: Counter[str] = Counter()
    escaped = []
    for path in paths:
        try:
            image = load_dicom(path)
        except MedsegError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            reason = " ".join(re.sub(r"\(.*?\)|\d+|:.*", "", exc.reason).split())
            outcomes[f"rejected {type(exc).__name__}: {reason}"] += 1
        except Exception as exc:  # noqa: BLE001 - this is what the test hunts for
            escaped.append(f"{path.name}: {type(exc).__name__}: {exc}")
        else:
            assert image.array.size > 0 and image.source == str(path)
            outcomes["loaded"] += 1
    print(f"\n{len(paths)} corpus entries:")
    for outcome, n in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d}  {outcome}")
    assert not escaped, escaped
    assert outcomes["loaded"] >= 80
    assert _mtimes(paths) == before  # opened read-only


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("rtplan.dcm", NotAnImageError),
        ("waveform_ecg.dcm", NotAnImageError),
        ("test-SR.dcm", NotAnImageError),
        ("rtstruct.dcm", NotAnImageError),
        ("README.txt", ReadError),
    ],
)
def test_known_non_images_are_rejected_with_their_kind(name, error):
    path = get_testdata_file(name)
    with pytest.raises(error):
        load_dicom(path)
