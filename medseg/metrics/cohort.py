"""Evaluate a cohort: pair prediction and reference files, evaluate each case, isolate failures.

Pairing rule (documented for users in ``medseg evaluate --help``):

1. PRED and GT are both files -> one case, named after the reference file.
2. PRED and GT are both folders -> every image file (any suffix medseg reads)
   and every sub-folder (a DICOM series) directly inside each folder is a
   candidate. Its *case name* is the file name without the image suffix
   (``.nii.gz``, ``.nrrd``, ``.png`` ...) and without one trailing tag
   ``_pred``, ``_prediction``, ``_seg``, ``_segmentation``, ``_label``,
   ``_labels``, ``_mask``, ``_gt`` or ``_ref`` (case-insensitive). Files pair
   when their case names are equal; the rest are listed as unpaired (also when
   two files of one folder share a case name).

Each case is loaded with :func:`medseg.load` and scored by :func:`evaluate_pair`
under the one alignment rule of :func:`align_to_reference` (the rule ``medseg
batch --gt`` and the demo use too): a prediction whose grid differs from the
reference's but overlaps it in world space is resampled (nearest neighbour)
onto the reference grid and the case notes say so; unreadable files and
non-overlapping grids make that case fail with a message naming both files,
and the run goes on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medseg.errors import ConfigError, MedsegError
from medseg.io import load
from medseg.io.formats import is_image_file, strip_image_suffix
from medseg.io.image import Image, LabelMap
from medseg.labelmap import as_label_map
from medseg.metrics.evaluate import Labels, evaluate_case
from medseg.metrics.instances import instance_metrics

_TAG = re.compile(r"_(pred|prediction|seg|segmentation|labels?|mask|gt|ref)$", re.IGNORECASE)


def case_name(path: str | os.PathLike[str]) -> str:
    """The case name of a file or folder under the pairing rule.

    Examples
    --------
    >>> case_name("preds/liver_007_pred.nii.gz"), case_name("gt/liver_007.nii.gz")
    ('liver_007', 'liver_007')
    """
    return _TAG.sub("", strip_image_suffix(Path(path).name))


def _candidates(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() or is_image_file(entry):
            found.setdefault(case_name(entry), []).append(entry)
    return found


@dataclass
class Pairing:
    """Cases found in a prediction and a reference location."""

    pairs: list[tuple[str, Path, Path]]
    unpaired_pred: list[Path]
    unpaired_ref: list[Path]


def pair_cases(pred: str | os.PathLike[str], ref: str | os.PathLike[str]) -> Pairing:
    """Pair prediction and reference files by case name (see the module docstring for the rule).

    Raises
    ------
    medseg.errors.ConfigError
        When a location does not exist, or one is a file and the other a folder.
    """
    p, r = Path(pred), Path(ref)
    for path in (p, r):
        if not path.exists():
            raise ConfigError("no such file or folder", path)
    if p.is_file() and r.is_file():
        return Pairing([(case_name(r), p, r)], [], [])
    if p.is_dir() != r.is_dir():
        raise ConfigError(f"prediction {p} and reference {r} must both be files or both be folders")
    pc, rc = _candidates(p), _candidates(r)
    pairs, up, ur = [], [], []
    for name in sorted(set(pc) | set(rc)):
        a, b = pc.get(name, []), rc.get(name, [])
        if len(a) == 1 and len(b) == 1:
            pairs.append((name, a[0], b[0]))
        else:
            up.extend(a)
            ur.extend(b)
    return Pairing(pairs, up, ur)


@dataclass
class CaseRecord:
    """What happened to one case: its files, notes (resampling, empty maps), error, and figures.

    ``figures`` holds ``(caption, png_bytes)`` overlays made while the volumes
    were in memory, for :func:`medseg.report.write_report`.
    """

    case: str
    pred_path: str
    ref_path: str
    image_path: str | None = None
    status: str = "ok"
    notes: list[str] = field(default_factory=list)
    error: str = ""
    figures: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class CohortResult:
    """Per-case table, the record of every case, and the unpaired files."""

    per_case: pd.DataFrame
    cases: list[CaseRecord]
    unpaired_pred: list[str]
    unpaired_ref: list[str]
    instances: bool = False


FigureMaker = Callable[[Image | None, Image, Image, pd.DataFrame, bool], list[tuple[str, bytes]]]


def _grid(image: Image) -> str:
    return f"{'x'.join(map(str, image.shape))} @ {'x'.join(f'{s:.3g}' for s in image.spacing)} mm"


def align_to_reference(pred: Image, ref: Image) -> tuple[LabelMap, list[str]]:
    """The ground-truth alignment rule of every medseg command: ``pred`` on ``ref``'s grid, and what was done.

    Same grid: unchanged. Same voxels in another order (flips, permutations):
    reordered exactly. Another grid that overlaps in world space: resampled
    (nearest neighbour) onto the reference grid, with a note saying so.

    Raises
    ------
    medseg.errors.GeometryError
        When the grids do not overlap in world space (or differ in dimensionality).
    """
    pred = as_label_map(pred)
    if ref.same_grid(pred):
        return pred, []
    from medseg.io.resample import resample_to

    return resample_to(pred, ref, "nearest"), [
        f"prediction grid {_grid(pred)} resampled (nearest neighbour) onto the reference grid {_grid(ref)}"
    ]


def evaluate_pair(
    pred: Image,
    ref: Image,
    *,
    case: str | None = None,
    labels: Labels = None,
    tolerance_mm: float = 2.0,
    instances: bool = False,
    iou_threshold: float = 0.5,
    surface: bool = True,
) -> tuple[pd.DataFrame, LabelMap, LabelMap, list[str]]:
    """Evaluate one prediction against its reference after :func:`align_to_reference`.

    The one per-case evaluation of ``medseg evaluate``, ``medseg batch --gt``
    and the demo. Returns the metric rows, the aligned prediction, the
    reference as a label map, and notes (resampling, empty maps).
    ``surface=False`` leaves out the surface distances (overlap and sizes only).
    """
    ref_map = as_label_map(ref)
    pred_map, notes = align_to_reference(pred, ref_map)
    if not pred_map.array.any():
        notes.append("prediction is empty")
    if not ref_map.array.any():
        notes.append("reference is empty")
    if instances:
        metrics = instance_metrics(pred_map, ref_map, iou_threshold)
        rows = pd.DataFrame([{**({"case": case} if case is not None else {}), "label": 1, "name": "object", **metrics}])
    else:
        rows = evaluate_case(pred_map, ref_map, labels=labels, tolerance_mm=tolerance_mm, surface=surface, case=case)
    return rows, pred_map, ref_map, notes


def evaluate_cohort(
    pred: str | os.PathLike[str],
    ref: str | os.PathLike[str],
    labels: Labels = None,
    tolerance_mm: float = 2.0,
    instances: bool = False,
    iou_threshold: float = 0.5,
    images: str | os.PathLike[str] | None = None,
    figures: FigureMaker | None = None,
    progress: Callable[[CaseRecord], None] | None = None,
) -> CohortResult:
    """Evaluate every paired case; a failing case is recorded and the others go on.

    Parameters
    ----------
    pred, ref : path-like
        Prediction and reference files or folders (paired by :func:`pair_cases`).
    labels : mapping int -> name, or sequence of int, optional
        Labels to report (default: all present). Ignored with ``instances``.
    tolerance_mm : float
        NSD tolerance, mm.
    instances : bool
        Treat the maps as instance maps and compute instance metrics.
    iou_threshold : float
        Matching threshold for instance metrics.
    images : path-like, optional
        The scans (file or folder, same pairing rule) to draw overlays on.
    figures : callable, optional
        ``figures(scan, pred, ref, rows, instances)`` returning overlay PNGs
        (e.g. :func:`medseg.report.case_figures`); None draws nothing.
    progress : callable, optional
        Called with each finished :class:`CaseRecord`.
    """
    pairing = pair_cases(pred, ref)
    scans: Mapping[str, list[Path]] = {}
    if images is not None:
        ip = Path(images)
        if not ip.exists():
            raise ConfigError("no such file or folder", ip)
        scans = _candidates(ip) if ip.is_dir() else {pairing.pairs[0][0] if pairing.pairs else "": [ip]}
    tables, records = [], []
    for name, p_path, r_path in pairing.pairs:
        scan_paths = scans.get(name, [])
        rec = CaseRecord(name, str(p_path), str(r_path), str(scan_paths[0]) if len(scan_paths) == 1 else None)
        try:
            rows, pred_img, ref_img, notes = evaluate_pair(
                load(p_path), load(r_path), case=name, labels=labels, tolerance_mm=tolerance_mm,
                instances=instances, iou_threshold=iou_threshold,
            )
            rec.notes.extend(notes)
            tables.append(rows)
            if figures is not None:
                scan = _load_scan(rec, ref_img)
                rec.figures = figures(scan, pred_img, ref_img, rows, instances)
        except MedsegError as exc:
            rec.status = "error"
            message = str(exc)
            if str(p_path) not in message or str(r_path) not in message:
                message += f" (prediction {p_path}, reference {r_path})"
            rec.error = message
        records.append(rec)
        if progress is not None:
            progress(rec)
    per_case = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["case", "label", "name"])
    return CohortResult(
        per_case=per_case,
        cases=records,
        unpaired_pred=[str(x) for x in pairing.unpaired_pred],
        unpaired_ref=[str(x) for x in pairing.unpaired_ref],
        instances=instances,
    )


def _load_scan(rec: CaseRecord, ref: Image) -> Image | None:
    if rec.image_path is None:
        return None
    try:
        scan = load(rec.image_path)
        if not ref.same_grid(scan):
            from medseg.io.resample import resample_to

            scan = resample_to(scan, ref, "linear")
        return scan
    except MedsegError as exc:
        rec.notes.append(f"scan not shown: {exc}")
        return None
