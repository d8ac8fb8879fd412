"""A dataset fingerprint: what the planner needs to know about the training cases, read once.

Per case: shape and spacing (in the planner's frame: 3D volumes reoriented to
RAS by an axis permutation, as training will reorient them), orientation,
channels, modality, the voxel count of every label, the physical size of
every connected object of every label, how left-right symmetric each label
is (its overlap with its mirror image), and a random sample of the image
intensities inside the labelled foreground (at most
:data:`SAMPLES_PER_CASE` voxels per case, as nnU-Net samples them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, MedsegError
from medseg.io.image import Image

SAMPLES_PER_CASE = 10_000


@dataclass
class CaseFingerprint:
    """One training case as the planner sees it (3D: axes permuted to R-L, A-P, S-I order)."""

    case_id: str
    shape: tuple[int, ...]
    spacing_mm: tuple[float, ...]
    spacing_known: bool
    orientation: str
    channels: int
    modality: str
    label_voxels: dict[int, int]
    object_sizes_mm: dict[int, list[float]]  # per label value: each connected object's area (2D) or volume (3D)
    mirror_dice: dict[int, float]  # per label value: overlap with its left-right mirror image (see mirror_overlap)
    foreground: np.ndarray = field(repr=False)  # (n, channels) sampled intensities inside the labels


@dataclass
class DatasetFingerprint:
    """Every training case plus the dataset-wide figures the plan is made from."""

    cases: list[CaseFingerprint]
    source: Path
    label_names: dict[str, int] | None = None  # the dataset.json's own ``labels`` (semantic label maps only)

    @property
    def dims(self) -> int:
        return len(self.cases[0].shape)

    @property
    def channels(self) -> int:
        return self.cases[0].channels

    @property
    def modality(self) -> str:
        """The most common modality code among the cases (``""`` when none states one)."""
        codes = [c.modality for c in self.cases if c.modality]
        return max(set(codes), key=codes.count) if codes else ""

    @property
    def spacing_known(self) -> bool:
        return all(c.spacing_known for c in self.cases)

    def spacings(self) -> np.ndarray:
        """``(n_cases, dims)`` voxel spacings, mm."""
        return np.array([c.spacing_mm for c in self.cases])

    def shapes(self) -> np.ndarray:
        """``(n_cases, dims)`` voxel counts."""
        return np.array([c.shape for c in self.cases])

    def median_spacing(self) -> np.ndarray:
        return np.median(self.spacings(), axis=0)

    def median_extent_mm(self) -> np.ndarray:
        """Median physical size of the images per axis, mm."""
        return np.median(self.shapes() * self.spacings(), axis=0)

    def foreground_intensities(self) -> np.ndarray:
        """All sampled foreground intensities, ``(n, channels)``."""
        return np.concatenate([c.foreground for c in self.cases], axis=0)

    def label_fractions(self) -> dict[int, float]:
        """Share of all voxels that each label value covers, over every case."""
        total = sum(sum(c.label_voxels.values()) for c in self.cases)
        values = sorted({v for c in self.cases for v in c.label_voxels})
        return {v: sum(c.label_voxels.get(v, 0) for c in self.cases) / total for v in values}

    def mirror_symmetry(self) -> float:
        """The least left-right symmetric label's median :func:`mirror_overlap` over the cases (1 when none)."""
        values = sorted({v for c in self.cases for v in c.mirror_dice})
        medians = [float(np.median([c.mirror_dice[v] for c in self.cases if v in c.mirror_dice])) for v in values]
        return min(medians, default=1.0)

    def object_sizes(self, value: int | None = None) -> np.ndarray:
        """Physical sizes of the connected objects of label ``value`` (all foreground labels when None)."""
        sizes = [s for c in self.cases for v, ss in c.object_sizes_mm.items() if value in (None, v) for s in ss]
        return np.asarray(sizes, float)


def _ras_permutation(image: Image) -> tuple[int, ...]:
    """Array axis that runs along R-L, A-P, S-I (in that order) for a 3D image; identity in 2D."""
    if image.ndim == 2:
        return (0, 1)
    weights = np.abs(np.asarray(image.direction))  # rows: world axes (LPS), columns: array axes
    order: list[int] = []
    for world_axis in range(3):
        ranked = [a for a in np.argsort(-weights[world_axis]).tolist() if a not in order]
        order.append(ranked[0])
    return tuple(order)


def mirror_overlap(labels: np.ndarray, axis: int) -> dict[int, float]:
    """Per foreground label: the Dice of its mask with its mirror image along ``axis`` about the image's middle
    (the body's midline, for scans centred on the patient).

    Near 1 for a label that is its own mirror image (both lungs as one label: 0.71-0.85 on chest films); low for
    one on a side (liver 0.0, heart 0.4-0.7).
    """
    mirrored = np.flip(labels, axis)
    overlap = {}
    for value in np.unique(labels).tolist():
        if value:
            mask, flipped = labels == value, mirrored == value
            overlap[int(value)] = 2.0 * float((mask & flipped).sum()) / float(mask.sum() + flipped.sum())
    return overlap


def fingerprint_case(case_id: str, image: Image, label: Image, *, seed: int = 0) -> CaseFingerprint:
    """Fingerprint one (image, label) pair on the image's grid (``label`` as class indices)."""
    from medseg.labelmap import label_components

    perm = _ras_permutation(image)
    labels = np.asarray(label.array)
    values, counts = np.unique(labels, return_counts=True)
    voxel = image.voxel_volume_mm3 if image.spacing_known else 1.0
    sizes: dict[int, list[float]] = {}
    for value in values.tolist():
        if value == 0:
            continue
        components, n = label_components(labels == value, 8 if labels.ndim == 2 else 26)
        sizes[int(value)] = (np.bincount(components.ravel())[1:] * voxel).tolist() if n else []
    pixels = image.array.reshape(-1, image.n_channels) if image.channel_axis else image.array.reshape(-1, 1)
    inside = np.flatnonzero(labels.reshape(-1) > 0)
    rng = np.random.default_rng(seed)
    pick = rng.choice(inside, size=min(SAMPLES_PER_CASE, inside.size), replace=False) if inside.size else inside
    return CaseFingerprint(
        case_id=case_id,
        shape=tuple(int(image.shape[a]) for a in perm),
        spacing_mm=tuple(float(image.spacing[a]) for a in perm),
        spacing_known=image.spacing_known,
        orientation=image.orientation,
        channels=image.n_channels,
        modality=image.modality,
        label_voxels={int(v): int(c) for v, c in zip(values.tolist(), counts.tolist(), strict=True)},
        object_sizes_mm=sizes,
        mirror_dice=mirror_overlap(labels, perm[0]),
        foreground=pixels[pick].astype(np.float64),
    )


def fingerprint_dataset(
    dataset_json: str | os.PathLike[str], *, label_source: str = "semantic", labels: Mapping[str, int] | None = None
) -> DatasetFingerprint:
    """Read every training case of an MSD ``dataset.json`` and fingerprint it.

    Parameters
    ----------
    dataset_json : path-like
        The dataset (``training`` entries; ``spacing_mm`` per entry or per file for raster data).
    label_source : {"semantic", "instances", "binary"}
        How the stored label maps encode classes (instance maps count as one foreground class).
    labels : mapping, optional
        The workflow's label names -> values, to check the stored values against.

    Raises
    ------
    medseg.errors.ConfigError
        Cases whose dimensionality or channels disagree (naming them), labels that no case holds, unreadable cases.
    """
    from medseg.io import load
    from medseg.train.dataset import case_id, training_entries

    path = Path(dataset_json)
    entries, _ = training_entries(path)
    first = load(entries[0][0])  # its dimensionality says how to read the pixel sizes dataset.json states
    entries, stated = training_entries(path, first.ndim)
    cases, problems = [], []
    for i, (image_path, label_path) in enumerate(entries):
        spacing = stated.get(image_path)
        try:
            image = load(image_path, spacing=spacing) if spacing else first if i == 0 else load(image_path)
            label = load(label_path, spacing=spacing) if spacing else load(label_path)
        except MedsegError as exc:
            problems.append(f"{exc}")
            continue
        stored = np.asarray(label.array)
        classes = stored if label_source == "semantic" else (stored > 0).astype(np.uint8)
        if stored.shape != image.shape:
            problems.append(f"{label_path}: label shape {stored.shape} differs from the image's {image.shape}")
            continue
        cases.append(fingerprint_case(case_id(image_path), image, label.with_array(classes), seed=i))
    if problems:
        raise ConfigError(f"{len(problems)} of {len(entries)} case(s) unreadable -- " + " | ".join(problems), path)
    _check_consistent(cases, path)
    declared = dataset_labels(path) if label_source == "semantic" else None
    labels = labels if labels is not None else declared
    if labels is not None and label_source == "semantic":
        present = {v for c in cases for v, n in c.label_voxels.items() if n}
        absent = sorted(name for name, v in labels.items() if v and v not in present)
        if absent:
            raise ConfigError(f"labels {absent} are absent from every training case", path)
    return DatasetFingerprint(cases, path, declared)


def dataset_labels(dataset_json: Path) -> dict[str, int] | None:
    """The ``labels`` of a dataset.json as name -> value, or None when it states none."""
    from medseg._files import read_json
    from medseg.train.dataset import declared_labels

    by_index = declared_labels(read_json(dataset_json, "dataset description", expect=dict).get("labels"), dataset_json)
    return {name: value for value, name in sorted(by_index.items())} or None


def _check_consistent(cases: list[CaseFingerprint], source: Path) -> None:
    """One dimensionality and one channel count across the cases, or a ConfigError naming the odd ones."""
    for what, key in (("dimensionality", lambda c: len(c.shape)), ("channels", lambda c: c.channels)):
        found: dict[Any, list[str]] = {}
        for c in cases:
            found.setdefault(key(c), []).append(c.case_id)
        if len(found) > 1:
            common = max(found, key=lambda k: len(found[k]))
            odd = {k: v for k, v in found.items() if k != common}
            raise ConfigError(f"cases disagree in {what}: most have {common}, but " + "; ".join(
                f"{', '.join(ids)} {'have' if len(ids) > 1 else 'has'} {k}" for k, ids in odd.items()), source)
