"""K-fold cross-validation: K models of one workflow config, their ensemble, and the cross-validation Dice.

``medseg train ... --folds K`` (:func:`cross_validate`) splits the training
entries of a dataset.json into K folds (seeded, as nnU-Net's 5-fold split),
trains one model per fold on the other K-1 folds into ``OUT/fold_N`` and
scores it on its own held-out fold: every training case is predicted once, by
the one model that never saw it, through the whole inference path (the
network's label map on the case's own grid, before post-processing). Then
``OUT/summary.json`` holds the Dice per case and label and the mean per label
(as nnU-Net's ``summary.json``), and ``OUT/folds.json`` makes ``OUT`` an
ensemble that :func:`medseg.load_model` loads: inference averages the folds'
class probabilities.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import write_text_atomic
from medseg.config import WorkflowConfig, as_config
from medseg.errors import ConfigError
from medseg.models.folds import SUMMARY_NAME, write_manifest
from medseg.models.model import load_model
from medseg.models.store import training_finished
from medseg.train.dataset import case_id, load_cases, read_dataset, training_entries
from medseg.train.loop import train

SUMMARY_FORMAT = "medseg-crossval/1"


def assign_folds(n_cases: int, k: int, seed: int = 0) -> list[int]:
    """The fold (0..k-1) of each of ``n_cases`` entries: a seeded permutation dealt round-robin (sizes differ by <= 1)."""
    order = np.random.default_rng(seed).permutation(n_cases)
    folds = np.empty(n_cases, int)
    folds[order] = np.arange(n_cases) % k
    return folds.tolist()


def fold_dice(model: Any, cases: list[Any], labels: dict[str, int]) -> list[dict[str, Any]]:
    """Dice per foreground label of ``model``'s label map on each case's grid (None where both lack the label)."""
    from medseg.metrics import confusion_matrix
    from medseg.metrics.overlap import overlap_from_confusion

    names = {i: n for n, i in labels.items() if i}
    values = np.array(sorted(names))
    rows = []
    for case in cases:
        predicted = np.asarray(model.segment(case.image).array)
        conf = confusion_matrix(predicted, np.asarray(case.label.array), n_labels=int(values.max()) + 1)
        dice = overlap_from_confusion(conf, values)["dice"]
        scores = {names[v]: (None if math.isnan(d) else round(float(d), 5)) for v, d in zip(values, dice, strict=True)}
        rows.append({"case": case.case_id, "dice": scores})
    return rows


def check_folds(folds: int, dataset_json: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """The training entries of ``dataset_json``, after checking they make ``folds`` cross-validation folds.

    Raises
    ------
    medseg.errors.ConfigError
        Fewer than 2 folds, or more folds than training cases (naming the cases there are).
    """
    entries, _ = training_entries(dataset_json)
    if folds < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {folds}", "--folds")
    if folds > len(entries):
        ids = ", ".join(case_id(image) for image, _ in entries)
        raise ConfigError(f"{folds} folds need at least {folds} training cases; the dataset has {len(entries)} "
                          f"({ids})", dataset_json)
    return entries


def summarize_folds(per_case: list[dict[str, Any]], labels: dict[str, int]) -> dict[str, Any]:
    """Mean Dice per label over the cases that define it, and the mean over labels (``foreground_mean``)."""
    mean = {}
    for name in (n for n, i in labels.items() if i):
        defined = [r["dice"][name] for r in per_case if r["dice"][name] is not None]
        mean[name] = round(float(np.mean(defined)), 5) if defined else None
    defined_means = [v for v in mean.values() if v is not None]
    return {"mean": mean, "foreground_mean": round(float(np.mean(defined_means)), 5) if defined_means else None}


def cross_validate(
    config: WorkflowConfig | str | os.PathLike[str] | dict[str, Any],
    dataset_json: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    folds: int,
    seed: int = 0,
    resume: bool = False,
    device: str = "auto",
    **train_options: Any,
) -> Path:
    """Train ``folds`` cross-validation models into ``out_dir`` and score each on its held-out fold.

    Parameters
    ----------
    config, dataset_json, seed, device
        As :func:`medseg.train.train`; the ``validation`` list of dataset.json is not used (the folds are).
    out_dir : path-like
        Becomes an ensemble folder: ``fold_0`` ... model directories, ``folds.json``, ``summary.json``.
    folds : int
        K >= 2, at most the number of training entries.
    resume : bool
        Keep the folds that finished; resume the one interrupted.
    **train_options
        ``max_minutes`` (the wall-clock budget of *each* fold), ``max_epochs``, ``progress``: as
        :func:`medseg.train.train`.

    Raises
    ------
    medseg.errors.ConfigError
        Fewer than 2 folds, or more folds than training cases (naming how many there are).
    """
    cfg = as_config(config)
    entries = check_folds(folds, dataset_json)
    fold_of = assign_folds(len(entries), folds, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_case: list[dict[str, Any]] = []
    for fold in range(folds):
        fold_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"fold": fold})})
        fold_dir = out / f"fold_{fold}"
        if not (resume and training_finished(fold_dir)):
            train(fold_cfg, dataset_json, fold_dir, seed=seed, resume=resume and fold_dir.is_dir(), device=device,
                  fold_of=fold_of, **train_options)
        split = read_dataset(dataset_json, fold_cfg, seed=seed, fold_of=fold_of)
        held_out = load_cases(split.val, fold_cfg, Path(dataset_json), split.spacing_mm)
        rows = fold_dice(load_model(fold_dir, device=device), held_out, dict(cfg.labels))
        per_case.extend({**row, "fold": fold} for row in rows)
    write_manifest(out, list(range(folds)))
    summary = {
        "format": SUMMARY_FORMAT,
        "folds": folds,
        "metric": "Dice per label of each fold's model on its held-out cases, on each case's grid, before "
                  "post-processing",
        **summarize_folds(per_case, dict(cfg.labels)),
        "per_case": per_case,
    }
    write_text_atomic(out / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    return out
