"""Atomic writes: the target is either untouched or complete, with ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from medseg.atomic import atomic_path, write_text_atomic


def test_failure_leaves_target_and_folder_untouched(tmp_path: Path) -> None:
    target = tmp_path / "labels.nii.gz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz"]


def test_success_replaces_with_umask_permissions(tmp_path: Path) -> None:
    target = write_text_atomic(tmp_path / "sub" / "table.csv", "a,b\n")
    assert target.read_text() == "a,b\n"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
