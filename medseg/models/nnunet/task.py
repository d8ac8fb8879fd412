"""Multi-model tasks: several nnU-Net results folders merged into one label map, as TotalSegmentator's tasks.

TotalSegmentator's ``total`` task runs five nnU-Net models (organs, vertebrae,
cardiac, muscles, ribs) and writes each part's labels into one map under the
task's own label values, later parts overwriting earlier ones. A task file
says the same in YAML (or JSON)::

    name: abdomen
    labels: {1: spleen, 2: liver, 3: stomach, 4: aorta}     # the task's label values and names
    parts:
      - model: Dataset291_Organs/nnUNetTrainer__nnUNetPlans__3d_fullres   # relative to this file
        folds: [0]                       # optional loader options: folds, checkpoint, step_size, mirroring
      - model: Dataset292_Vessels/nnUNetTrainer__nnUNetPlans__3d_fullres
        labels: {1: aorta}               # optional: part value -> task label name (default: dataset.json names)

A part's label whose name is not one of the task's labels is an error, unless
the part's ``labels`` mapping leaves it out (then it is dropped). ``medseg
segment task.yaml ...`` runs the task as one Segmenter.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg._files import read_json, read_yaml
from medseg.errors import ModelError
from medseg.io.image import Image, LabelMap

_PART_OPTIONS = ("folds", "checkpoint", "step_size", "mirroring")


@dataclass
class _Part:
    segmenter: Any
    mapping: dict[int, int]  # part value -> task value


def _int_keyed(raw: Any, what: str, path: Path) -> dict[int, str]:
    if not isinstance(raw, dict) or not raw:
        raise ModelError(f"{what} must be a mapping of label values to names", path)
    out = {}
    for key, value in raw.items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            raise ModelError(f"{what}: {key!r} is not an integer label value", path) from None
        if k <= 0:
            raise ModelError(f"{what}: label value {k} must be positive (0 is background)", path)
        if not isinstance(value, str) or not value:
            raise ModelError(f"{what}: label {k} needs a name", path)
        out[k] = value
    return out


class TaskSegmenter:
    """Several segmenters whose label maps merge into one, later parts overwriting earlier ones."""

    postprocess = None

    def __init__(self, name: str, label_names: dict[int, str], parts: list[_Part], source: Path) -> None:
        self.name = name
        self.label_names = dict(sorted(label_names.items()))
        self.parts = parts
        self.source = source
        dims = {p.segmenter.spatial_dims for p in parts}
        chans = {p.segmenter.in_channels for p in parts}
        if len(dims) > 1 or len(chans) > 1:
            raise ModelError(f"the task's parts disagree on dimensions {sorted(dims)} or channels {sorted(chans)}",
                             source)
        self.spatial_dims = dims.pop()
        self.in_channels = chans.pop()

    def fingerprint(self) -> str:
        """16 hex digits over the task's labels and each part's fingerprint and mapping."""
        data = {"labels": self.label_names,
                "parts": [[p.segmenter.fingerprint(), sorted(p.mapping.items())] for p in self.parts]}  # fmt: skip
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def segment(self, image: Image, *, tta: bool | None = None) -> LabelMap:
        """Each part's label map, its values mapped to the task's and written in part order."""
        dtype = np.uint8 if max(self.label_names, default=0) < 256 else np.uint16
        merged = np.zeros(image.shape, dtype=dtype)
        options = {} if tta is None else {"tta": tta}
        for part in self.parts:
            labels = part.segmenter.segment(image, **options).array
            for value, task_value in part.mapping.items():
                merged[labels == value] = task_value
        return image.with_labels(merged, self.label_names, meta={**image.meta, "segmentation_model": self.name})

    def __repr__(self) -> str:
        return f"TaskSegmenter({self.name!r}, {len(self.parts)} parts, {len(self.label_names)} labels)"


def load_task(spec: str | os.PathLike[str], **options: Any) -> TaskSegmenter:
    """Load a task file (YAML or JSON); ``options`` (``device``, ``folds``, ...) apply to every part.

    Raises
    ------
    medseg.errors.ModelError
        A malformed file, a part that does not load, or a part label the task does not name.
    """
    from medseg.segmenters.base import load_segmenter

    path = Path(spec)
    if path.suffix.lower() == ".json":
        data = read_json(path, "task file", expect=dict, error=ModelError)
    else:
        data = read_yaml(path, "task file", expect=dict, error=ModelError)
    unknown = sorted(set(data) - {"name", "labels", "parts", "description"})
    if unknown:
        raise ModelError(f"task file: unknown key(s) {', '.join(unknown)} (name, labels, parts)", path)
    labels = _int_keyed(data.get("labels"), "labels", path)
    by_name = {n: v for v, n in labels.items()}
    if len(by_name) != len(labels):
        raise ModelError("labels: two values share a name", path)
    raw_parts = data.get("parts")
    if not isinstance(raw_parts, list) or not raw_parts:
        raise ModelError("parts must be a non-empty list", path)
    parts = []
    for i, raw in enumerate(raw_parts):
        where = f"parts[{i}]"
        if not isinstance(raw, dict) or "model" not in raw:
            raise ModelError(f"{where} must be a mapping with 'model'", path)
        extra = sorted(set(raw) - {"model", "labels", *_PART_OPTIONS})
        if extra:
            raise ModelError(f"{where}: unknown key(s) {', '.join(extra)}", path)
        model = Path(str(raw["model"]))
        if not model.is_absolute():
            model = path.parent / model
        part_options = {**options, **{k: raw[k] for k in _PART_OPTIONS if k in raw}}
        segmenter = load_segmenter(str(model), **part_options)
        names = _int_keyed(raw["labels"], f"{where}.labels", path) if "labels" in raw else dict(segmenter.label_names)
        mapping = {}
        for value, name in names.items():
            if name not in by_name:
                raise ModelError(f"{where}: label {value} ({name}) of {model.name} is not one of the task's labels",
                                 path)
            mapping[value] = by_name[name]
        parts.append(_Part(segmenter, mapping))
    return TaskSegmenter(str(data.get("name") or path.stem), labels, parts, path)
