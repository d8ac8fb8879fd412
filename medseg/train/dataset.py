"""Training datasets: an MSD-style ``dataset.json``, its split, and per-case checks before training.

The format is the Medical Segmentation Decathlon's (what nnU-Net and MONAI users
already have on disk)::

    {"name": "...", "labels": {"0": "background", "1": "liver", ...},
     "training": [{"image": "./imagesTr/case_001.nii.gz", "label": "./labelsTr/case_001.nii.gz"}, ...],
     "validation": [...]}          # optional; or a "fold" integer per training entry

Paths are relative to the folder holding ``dataset.json``; an image may be any
file or DICOM series folder :func:`medseg.io.load` reads. Every case is read
once and checked (label values known to the config, label on the image's grid,
label map not empty, channels and dimensionality); all problems are reported
together, each naming its file, before any training starts.
"""

from __future__ import annotations

import math
import os
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg._files import read_json
from medseg.config import WorkflowConfig
from medseg.errors import ConfigError, GeometryError, LabelError, MedsegError
from medseg.io.image import Image
from medseg.labelmap import interior_boundary_classes, label_values

MIN_CASES_TO_HOLD_OUT = 20
"""Datasets with fewer cases train on every case and validate on them: each case held out would take 5% or more
of what the model learns from, and two or three validation cases pick a checkpoint by their noise."""


@dataclass
class Case:
    """One labelled training case, read and checked."""

    case_id: str
    image_path: Path
    label_path: Path
    image: Image
    label: Image

    def as_item(self) -> dict[str, Any]:
        """The mapping MONAI dictionary transforms consume."""
        return {"image": self.image, "label": self.label, "case_id": self.case_id}


@dataclass
class DatasetSplit:
    """Training and validation entries of a dataset.json (paths resolved, not yet read)."""

    name: str
    train: list[tuple[Path, Path]]
    val: list[tuple[Path, Path]]
    how: str  # how the validation cases were chosen
    spacing_mm: dict[Path, tuple[float, ...]] = field(default_factory=dict)  # stated by dataset.json, per image


def case_id(path: Path) -> str:
    """Case identifier from an image path (``case_001.nii.gz`` -> ``case_001``; nnU-Net's ``_0000`` dropped)."""
    from medseg.io.formats import strip_image_suffix

    stem = strip_image_suffix(Path(path).name)
    return stem[:-5] if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit() else stem


def declared_labels(declared: Any, path: Path) -> dict[int, str]:
    """A dataset.json ``labels`` value as index -> name (MSD ``{"0": "background"}`` or nnU-Net v2
    ``{"background": 0}``); empty when it states none."""
    if not declared:
        return {}
    if not isinstance(declared, dict):
        raise ConfigError(f"'labels' must map indices to names, got {reprlib.repr(declared)}", path)
    try:
        if all(str(k).isdigit() for k in declared):
            return {int(k): str(v) for k, v in declared.items()}
        return {int(v): str(k) for k, v in declared.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"'labels' must map indices to names, got {declared}", path) from exc


def _check_labels_match(declared: Any, config: WorkflowConfig, path: Path) -> None:
    by_index = declared_labels(declared, path)
    expected = {i: n for n, i in config.labels.items()}
    if by_index and by_index != expected:
        raise ConfigError(f"dataset labels {by_index} differ from the config's labels {expected}", path)


def _entry(item: Any, where: str, source: Path) -> tuple[Path, Path]:
    """The resolved (image, label) paths of one dataset.json entry; :class:`ConfigError` for a malformed one."""
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be an object with 'image' and 'label', got {reprlib.repr(item)}", source)
    missing = [key for key in ("image", "label") if key not in item]
    if missing:
        raise ConfigError(f"{where} has no {' and no '.join(repr(k) for k in missing)} key", source)
    paths = []
    for key in ("image", "label"):
        value = item[key]
        if key == "image" and isinstance(value, list) and len(value) == 1:  # MSD's list of modalities, one given
            value = value[0]
        if not isinstance(value, str) or not value.strip():
            multi = " (multi-file images are not supported)" if key == "image" and isinstance(value, list) else ""
            raise ConfigError(f"{where}.{key} must be one file path{multi}, got {reprlib.repr(item[key])}", source)
        paths.append((source.parent / value).resolve())
    return paths[0], paths[1]


def _spacing(value: Any, dims: int, source: Path, where: str = "spacing_mm") -> tuple[float, ...]:
    """``spacing_mm`` of dataset.json as a tuple of ``dims`` positive finite numbers."""
    numbers = isinstance(value, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not numbers or len(value) != dims or not all(math.isfinite(v) and v > 0 for v in value):
        raise ConfigError(
            f"'{where}' must be a list of {dims} positive numbers (mm per image axis), got {reprlib.repr(value)}",
            source,
        )
    return tuple(float(v) for v in value)


def read_dataset(
    dataset_json: str | os.PathLike[str], config: WorkflowConfig, *, seed: int = 0, fold_of: Sequence[int] | None = None
) -> DatasetSplit:
    """Parse ``dataset.json`` and split it into training and validation entries.

    The validation cases are, in order of precedence: with ``fold_of`` (the
    fold of each training entry, as cross-validation assigns them), the
    entries of fold ``config.train.fold``; the file's ``validation`` list; the
    training entries whose ``fold`` key equals ``config.train.fold``; a seeded
    random ``config.train.val_fraction`` of the
    cases (at least one). A dataset of fewer than :data:`MIN_CASES_TO_HOLD_OUT`
    cases validates on its training cases.

    ``spacing_mm`` (mm per image axis) of an entry, else of the whole file,
    states the pixel size of raster images whose files carry none (PNG without
    pHYs, JPEG): it applies to the entry's image and label files.
    """
    path = Path(dataset_json)
    data = read_json(path, "dataset description", expect=dict)
    if not isinstance(data.get("training"), list) or not data["training"]:
        raise ConfigError("dataset.json needs a non-empty 'training' list of {image, label} entries", path)
    if "validation" in data and not isinstance(data["validation"], list):
        raise ConfigError(f"'validation' must be a list of entries, got {reprlib.repr(data['validation'])}", path)
    if config.label_source == "semantic":  # otherwise the file's labels describe the stored maps, not the targets
        _check_labels_match(data.get("labels") or {}, config, path)

    training = [_entry(it, f"training[{i}]", path) for i, it in enumerate(data["training"])]
    fold = config.train.fold
    if fold_of is not None:
        if fold is None or len(fold_of) != len(training):
            raise ConfigError(f"a fold assignment needs train.fold and one fold per training entry ({len(training)})",
                              path)
        val = [e for e, f in zip(training, fold_of, strict=True) if f == fold]
        train = [e for e, f in zip(training, fold_of, strict=True) if f != fold]
        how = f"cross-validation fold {fold} of {len(set(fold_of))}"
    elif data.get("validation"):
        val = [_entry(it, f"validation[{i}]", path) for i, it in enumerate(data["validation"])]
        train, how = training, "the 'validation' list of dataset.json"
    elif fold is not None:
        folds = [it.get("fold") for it in data["training"]]
        bad = next((i for i, f in enumerate(folds) if not isinstance(f, int) or isinstance(f, bool)), None)
        if bad is not None:
            raise ConfigError(
                f"train.fold={fold} is set but training[{bad}] has no integer 'fold' key, got {folds[bad]!r}", path
            )
        val = [e for e, f in zip(training, folds, strict=True) if f == fold]
        train = [e for e, f in zip(training, folds, strict=True) if f != fold]
        if not val or not train:
            raise ConfigError(
                f"fold {fold} leaves no {'validation' if not val else 'training'} cases; folds: {sorted(set(folds))}",
                path,
            )
        how = f"fold {fold} of the entries' 'fold' keys"
    elif len(training) < MIN_CASES_TO_HOLD_OUT:
        train, val = training, training
        how = f"the {len(training)} training case(s) themselves (fewer than {MIN_CASES_TO_HOLD_OUT}: none held out)"
    else:
        order = np.random.default_rng(seed).permutation(len(training))
        n_val = max(1, round(config.train.val_fraction * len(training)))
        val_idx = set(order[:n_val].tolist())
        val = [e for i, e in enumerate(training) if i in val_idx]
        train = [e for i, e in enumerate(training) if i not in val_idx]
        how = f"{n_val} of {len(training)} cases held out at random (seed {seed})"
    return DatasetSplit(
        name=str(data.get("name") or path.parent.name), train=train, val=val, how=how,
        spacing_mm=_stated_spacings(data, config.dims, path),
    )


def training_entries(
    dataset_json: str | os.PathLike[str], dims: int | None = None
) -> tuple[list[tuple[Path, Path]], dict[Path, tuple[float, ...]]]:
    """The ``training`` (image, label) paths of a dataset.json and, given ``dims``, the pixel sizes it states
    (see :func:`read_dataset`), without a workflow: what :mod:`medseg.plan` fingerprints."""
    path = Path(dataset_json)
    data = read_json(path, "dataset description", expect=dict)
    if not isinstance(data.get("training"), list) or not data["training"]:
        raise ConfigError("dataset.json needs a non-empty 'training' list of {image, label} entries", path)
    entries = [_entry(it, f"training[{i}]", path) for i, it in enumerate(data["training"])]
    return entries, (_stated_spacings(data, dims, path) if dims else {})


def _stated_spacings(data: dict[str, Any], dims: int, path: Path) -> dict[Path, tuple[float, ...]]:
    """``{image path: spacing}`` from the ``spacing_mm`` keys of the entries and of the file (an MSD extension for
    raster data sets without a trustworthy pixel size in their files)."""
    default = _spacing(data["spacing_mm"], dims, path) if "spacing_mm" in data else None
    stated = {}
    for key in ("training", "validation"):
        for i, item in enumerate(data.get(key) or []):
            own = item.get("spacing_mm") if isinstance(item, dict) else None
            spacing = _spacing(own, dims, path, f"{key}[{i}].spacing_mm") if own is not None else default
            if spacing is not None:
                stated[_entry(item, f"{key}[{i}]", path)[0]] = spacing
    return stated


def _world_corners(image: Image) -> np.ndarray:
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in image.shape], indexing="ij")).reshape(image.ndim, -1).T
    return image.index_to_world(corners)


def _same_voxels_any_order(label: Image, image: Image, tol_mm: float) -> bool:
    """True when ``label`` covers the same voxel centres as ``image`` with axes permuted/flipped."""
    if sorted(label.shape) != sorted(image.shape):
        return False
    a, b = _world_corners(label), _world_corners(image)
    dist = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    return bool(
        dist.min(axis=1).max() <= tol_mm and np.allclose(sorted(label.spacing), sorted(image.spacing), atol=1e-3)
    )


def training_targets(label: np.ndarray, label_source: str) -> np.ndarray:
    """Class-index targets from a label map as stored (see ``WorkflowConfig.label_source``).

    ``instances``: background 0, object interior 1, object boundary 2 (the
    object's own outermost voxels), so touching objects stay separable.
    ``binary``: any non-zero value is class 1. ``semantic``: unchanged.
    """
    if label_source == "semantic":
        return label
    if label_source == "binary":
        return (label != 0).astype(np.uint8)
    return interior_boundary_classes(label)


def check_case(image: Image, label: Image, config: WorkflowConfig, label_path: Path) -> tuple[Image, list[str]]:
    """Check one image/label pair against the config; returns the label (on the image grid) and the problems found."""
    problems = []
    if image.ndim != config.dims:
        problems.append(f"image is {image.ndim}D, the workflow is {config.dims}D")
    if image.n_channels != config.in_channels:
        problems.append(f"image has {image.n_channels} channel(s), the workflow expects {config.in_channels}")
    if config.spacing_mm is not None and not image.spacing_known:
        problems.append("image spacing is unknown but the workflow resamples to a spacing in mm")
    if label.channel_axis or label.ndim != image.ndim:
        return label, [*problems, f"label map has shape {label.array.shape}, the image {image.array.shape}"]
    tol = 0.1 * min(image.spacing)
    if not label.same_grid(image, atol_mm=tol):
        if not _same_voxels_any_order(label, image, tol):
            offset = (
                float(np.abs(_world_corners(label) - _world_corners(image)).max())
                if label.shape == image.shape
                else None
            )
            detail = f"corner offset {offset:.3g} mm" if offset is not None else f"shape {label.shape} vs {image.shape}"
            return label, [*problems, f"label grid does not match the image grid ({detail}; tolerance {tol:.3g} mm)"]
        from medseg.io.resample import resample_to

        label = resample_to(label, image, "nearest")
    try:
        stored = label_values(label.array)
    except LabelError as exc:
        return label, [*problems, exc.reason]
    arr = training_targets(stored, config.label_source)
    values = np.unique(arr).astype(np.int64)
    allowed = set(config.labels.values())
    unknown = sorted(set(values.tolist()) - allowed)
    if unknown:
        problems.append(f"label values {unknown[:10]} not in the config's labels 0..{max(allowed)}")
    if values.tolist() == [0]:
        problems.append("label map is empty (all background)")
    return label.with_array(arr.astype(np.uint8 if max(allowed) < 256 else np.uint16)), problems


def load_cases(
    entries: list[tuple[Path, Path]],
    config: WorkflowConfig,
    source: Path,
    spacing_mm: Mapping[Path, tuple[float, ...]] | None = None,
) -> list[Case]:
    """Read and check every (image, label) pair; raise one error listing every bad case with its file.

    ``spacing_mm`` (:attr:`DatasetSplit.spacing_mm`) gives the pixel size of an image's raster files, its label's
    included.

    Raises
    ------
    medseg.errors.LabelError
        When any case fails a check (its read errors included).
    """
    from medseg.annotations import is_annotation_file, load_annotation_labels
    from medseg.io import load
    from medseg.io.formats import format_of
    from medseg.preprocess import in_pixel_units

    def read(path: Path, spacing: tuple[float, ...] | None) -> Image:
        raster = (fmt := format_of(path)) is not None and fmt.family == "raster"
        return load(path, spacing=spacing) if raster and spacing else load(path)

    def read_label(path: Path, image: Image, spacing: tuple[float, ...] | None) -> Image:
        """A label file, or an annotation file (COCO, GeoJSON, LabelMe, CVAT) rasterised on ``image``'s grid."""
        if not is_annotation_file(path):
            return read(path, spacing)
        by_class = None if config.label_source == "instances" else {n: i for n, i in config.labels.items() if i}
        return load_annotation_labels(path, image, classes=by_class)

    cases, problems = [], []
    for image_path, label_path in entries:
        spacing = (spacing_mm or {}).get(image_path)
        try:
            image = read(image_path, spacing)
        except MedsegError as exc:
            problems.append(f"{image_path}: {exc.reason}")
            continue
        try:
            label = read_label(label_path, image, spacing)
        except MedsegError as exc:
            problems.append(f"{label_path}: {exc.reason}")
            continue
        try:
            label, found = check_case(image, label, config, label_path)
        except GeometryError as exc:
            found = [exc.reason]
        if found:
            problems.append(f"{label_path}: {'; '.join(found)}")
        elif config.spacing_px:  # the model counts input pixels, whatever the files state
            cases.append(Case(case_id(image_path), image_path, label_path, in_pixel_units(image), in_pixel_units(label)))
        else:
            cases.append(Case(case_id(image_path), image_path, label_path, image, label))
    if problems:
        raise LabelError(f"{len(problems)} of {len(entries)} case(s) invalid -- " + " | ".join(problems), source)
    return cases
