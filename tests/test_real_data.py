"""Real-data check of the whole engine on a small budget: nuclei planned and trained on one half, scored on the other.

The full-budget figures come from ``python -m benchmarks.real_data`` (docs/RESULTS.md);
this test runs the same task end to end as a user does (``medseg train configs/nuclei_2d.yaml``:
fingerprint -> plan -> training; ``medseg batch``: segmentation -> post-processing -> instances)
with an epoch cap CI can afford, and asserts floors well below what that budget reaches, so it
fails on a broken pipeline (misplaced crop, wrong targets, inverted geometry, a plan that cannot
learn), not on run-to-run noise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EPOCHS = 12  # 300 optimiser steps of 4 planned patches: under a minute on 2 cores
FOREGROUND_DICE_FLOOR = 0.85
INSTANCE_F1_FLOOR = 0.70


def test_nuclei_left_half_to_right_half(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import real_data

    monkeypatch.setattr(real_data, "DATA", shared_data)
    scores, card, log = real_data.nuclei(tmp_path, minutes=6.0, seed=0, epochs=EPOCHS)
    assert "plan for" in log and (tmp_path / "run" / "plan.yaml").is_file()
    assert card["training"]["epochs_run"] == EPOCHS and card["label_source"] == "instances"
    assert scores["foreground_dice"] >= FOREGROUND_DICE_FLOOR, scores
    assert scores["instance_f1_iou50"] >= INSTANCE_F1_FLOOR, scores
