"""Folds: the fold selection rule shared by nnU-Net results folders and medseg ensembles, and the manifest of a
medseg cross-validation ensemble.

``medseg train --folds K`` writes one model directory per fold, ``fold_0`` ...
``fold_{K-1}`` (one config for all), and beside them ``folds.json`` listing
them and ``summary.json`` with the cross-validation Dice. Loading the folder
loads every listed fold; inference averages their class probabilities.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medseg._files import read_json
from medseg.atomic import write_text_atomic
from medseg.errors import ModelError

FOLDS_NAME = "folds.json"
FOLDS_FORMAT = "medseg-folds/1"
SUMMARY_NAME = "summary.json"
_CARD_NAME = "model_card.json"  # medseg.models.store.CARD_NAME, without importing torch here


def parse_folds(folds: Any) -> list[str] | None:
    """``None``, ``"all"``, ``0``, ``"0,1"``, ``"0 1"`` or ``[0, 1]`` -> fold names (``["0", "1"]``)."""
    if folds is None:
        return None
    if isinstance(folds, int) and not isinstance(folds, bool):
        return [str(folds)]
    if isinstance(folds, str):
        items = [f for f in re.split(r"[,\s]+", folds.strip()) if f]
    elif isinstance(folds, list | tuple):
        items = [str(f).strip() for f in folds]
    else:
        raise ModelError(f"folds must be fold numbers or 'all', got {folds!r}")
    if not items:
        raise ModelError("folds: no fold given")
    for item in items:
        if item != "all" and not item.isdigit():
            raise ModelError(f"folds: {item!r} is neither a fold number nor 'all'")
    return [str(int(f)) if f.isdigit() else f for f in items]


def is_ensemble_dir(path: Path) -> bool:
    """True for a folder holding a medseg ``folds.json``."""
    return path.is_dir() and (path / FOLDS_NAME).is_file()


def write_manifest(out_dir: Path, folds: list[int]) -> Path:
    """``folds.json`` listing the fold model directories ``fold_N`` of ``out_dir``."""
    manifest = {"format": FOLDS_FORMAT, "folds": [f"fold_{f}" for f in folds]}
    return write_text_atomic(out_dir / FOLDS_NAME, json.dumps(manifest, indent=2) + "\n")


def fold_dirs(model_dir: Path, folds: Any = None) -> list[Path]:
    """The fold model directories that ``folds.json`` lists, or the ``folds`` chosen of them (see :func:`parse_folds`).

    Raises
    ------
    medseg.errors.ModelError
        An invalid manifest, a listed fold directory without its model card, or a chosen fold not listed.
    """
    path = model_dir / FOLDS_NAME
    data = read_json(path, "folds manifest", expect=dict, error=ModelError)
    names = data.get("folds")
    if data.get("format") != FOLDS_FORMAT or not isinstance(names, list) or not names:
        raise ModelError(f"not a medseg folds manifest (expected format {FOLDS_FORMAT!r} and a 'folds' list)", path)
    listed = {str(n).removeprefix("fold_"): model_dir / str(n) for n in names}
    wanted = parse_folds(folds)
    if wanted is not None and "all" not in wanted:
        absent = [f for f in wanted if f not in listed]
        if absent:
            raise ModelError(f"folds {absent} are not in this ensemble (folds present: {sorted(listed)})", model_dir)
        listed = {f: listed[f] for f in wanted}
    missing = [d.name for d in listed.values() if not (d / _CARD_NAME).is_file()]
    if missing:
        raise ModelError(f"fold model directories {missing} listed by {FOLDS_NAME} are missing", model_dir)
    return list(listed.values())
