"""Discovery of the cases under an input folder, and their ids.

A *case* is one scan: a DICOM series (several may share a folder), a NIfTI,
NRRD or MHA file, or, for 2D workflows, a 2D image (PNG, JPEG, TIFF ...); or a
series on a DICOMweb server (:func:`discover_dicomweb`).
DICOM files that belong to no readable series (truncated, no pixel data,
not DICOM after all) become cases of their own, so the batch reports them in
``failures.csv`` instead of dropping them silently.

Case ids are ``s-`` (DICOM series) or ``f-`` (file) plus 12 hex digits of a
SHA-256 of the series UID or of the path relative to the input folder: stable
across runs and machines, safe in any file system, and free of patient names
that folder names often carry. The id -> source mapping is written to
``case_sources.csv`` beside the outputs (keep that file local).
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.atomic import write_text_atomic
from medseg.io.formats import FORMATS, format_of, strip_image_suffix

SOURCES_NAME = "case_sources.csv"
# Files that are never scans; everything else that is neither a volume nor a raster image is offered to the DICOM reader.
_NEVER_SCANS = (".txt", ".md", ".json", ".csv", ".tsv", ".xml", ".html", ".pdf", ".yaml", ".yml", ".py", ".log",
                ".zip", ".gz", ".tar", ".raw", ".zraw", ".ini", ".icc", ".dump", ".jsonl", ".parquet")
_ID_STYLES = ("hash", "path")


@dataclass(frozen=True)
class Case:
    """One scan to process.

    Attributes
    ----------
    case_id : str
        Deterministic, filesystem-safe id; names the case's output folder.
    kind : str
        ``"dicom_series"``, ``"dicom_file"`` (a DICOM-looking file in no readable series),
        ``"volume"``, ``"raster"`` or ``"dicomweb_series"`` (a series on a DICOMweb server).
    source : str
        The file, or for a series the folder holding its files, relative to the input folder
        (``studies/<uid>/series/<uid>`` on a DICOMweb server).
    files : tuple of str
        Absolute paths of every input file of the case (ground truth included; none for a remote series).
    series_uid : str
        SeriesInstanceUID for DICOM series, else ``""``.
    gt : str or None
        Absolute path of the case's ground-truth label map, when one was found.
    study_uid : str
        StudyInstanceUID of a remote series.
    remote_fp : str
        For a remote series: hash of its SOP Instance UIDs, standing in for the file fingerprints.
    """

    case_id: str
    kind: str
    source: str
    files: tuple[str, ...]
    series_uid: str = ""
    gt: str | None = None
    study_uid: str = ""
    remote_fp: str = ""


def input_fingerprint(case: Case) -> str:
    """The stat fingerprint of a case's inputs (:func:`~medseg.batch.fingerprint.stat_fingerprint`; remote: its UIDs)."""
    from medseg.batch.fingerprint import stat_fingerprint

    return case.remote_fp or stat_fingerprint(case.files)


@dataclass
class Discovery:
    """Result of :func:`discover_cases`: the cases plus what was looked at and left out (relative paths).

    ``input_dir`` is the input folder, or the DICOMweb address (without credentials) of a remote input.
    """

    input_dir: Path | str
    cases: list[Case]
    ignored: list[str] = field(default_factory=list)


# suffixes a ground-truth label file may have: the lossless formats (DICOM: a SEG or an RTSTRUCT)
_LABEL_SUFFIXES = tuple(dict.fromkeys(s for f in FORMATS if f.lossless_labels for s in f.suffixes))


def _family(path: Path) -> str | None:
    """``volume`` or ``raster`` for an image file of those families, else None (DICOM or other files)."""
    fmt = format_of(path)
    return fmt.family if fmt is not None and fmt.family != "dicom" else None


def _without_file_suffix(rel: str) -> str:
    """``rel`` without a volume or raster suffix (``.dcm`` and unknown suffixes are kept)."""
    return strip_image_suffix(rel) if _family(Path(rel)) else rel


def _hash_id(prefix: str, key: str) -> str:
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _path_id(rel: str) -> str:
    stem = _without_file_suffix(rel)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "case"


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    if path.suffix.lower() in _NEVER_SCANS or path.name.startswith(".") or path.name.upper() == "DICOMDIR":
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _walk(root: Path, skip_dirs: Sequence[Path], exclude: Sequence[str]) -> list[Path]:
    skip = {p.resolve() for p in skip_dirs}
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in skip)
        for name in sorted(filenames):
            p = here / name
            rel = p.relative_to(root).as_posix()
            if not any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(name, pat) for pat in exclude):
                found.append(p)
    return found


def _find_series_or_none(root: Path) -> list[Any]:
    """:func:`medseg.io.find_series`, but an empty list when the tree holds no readable DICOM file."""
    from medseg.errors import ReadError, SeriesError
    from medseg.io import find_series

    try:
        return list(find_series(root))
    except SeriesError:
        raise
    except ReadError:  # no DICOM files at all (or only corrupt ones, which become cases of their own)
        return []


def _gt_for(case_source: str, case_id: str, gt_dir: Path | None) -> str | None:
    """Ground truth for a case: ``GT_DIR/<source without suffix>.<ext>``, the same relative path, or ``<case_id>.<ext>``."""
    if gt_dir is None:
        return None
    stem = _without_file_suffix(case_source)
    candidates = [gt_dir / case_source] + [gt_dir / f"{s}{ext}" for s in (stem, case_id) for ext in _LABEL_SUFFIXES]
    for c in candidates:
        if c.is_file():
            return str(c.resolve())
    return None


def discover_cases(
    input_dir: str | os.PathLike[str],
    *,
    spatial_dims: int | None = None,
    exclude: Iterable[str] = (),
    skip_dirs: Iterable[str | os.PathLike[str]] = (),
    gt_dir: str | os.PathLike[str] | None = None,
    id_style: str = "hash",
) -> Discovery:
    """Find every case under ``input_dir``.

    Parameters
    ----------
    input_dir : path-like
        Folder searched recursively (hidden folders are skipped).
    spatial_dims : {2, 3, None}
        The workflow's dimensionality. 2D images (PNG/JPEG/TIFF ...) are cases
        only for 2D workflows (or when None); DICOM and volume files always
        are, and one of the wrong dimensionality fails with a clear message.
    exclude : iterable of str
        Glob patterns matched against the relative path and the file name.
    skip_dirs : iterable of path-like
        Folders not to descend into (the output and ground-truth folders).
    gt_dir : path-like, optional
        Folder of ground-truth label maps, matched by relative path or case id.
    id_style : {"hash", "path"}
        ``hash`` (default): ids carry no name from the input tree; ``path``:
        readable ids made from the relative path (may carry patient names).

    Raises
    ------
    medseg.errors.ReadError
        When ``input_dir`` is not a folder.
    """
    from medseg.errors import ConfigError, ReadError

    root = Path(input_dir).resolve()
    if not root.is_dir():
        raise ReadError("input is not a folder", root)
    if id_style not in _ID_STYLES:
        raise ConfigError(f"id_style must be one of {', '.join(_ID_STYLES)}, got {id_style!r}")
    gt_root = Path(gt_dir).resolve() if gt_dir is not None else None
    skip = [Path(p) for p in skip_dirs] + ([gt_root] if gt_root else [])
    files = _walk(root, skip, tuple(exclude))
    file_set = {p.resolve() for p in files}

    cases: list[Case] = []
    ignored: list[str] = []
    claimed: set[Path] = set()
    # (kind, source, key for the hashed id, files, series uid)
    found: list[tuple[str, str, str, list[Path], str]] = []
    has_other_files = any(_family(p) is None for p in files)
    series = _find_series_or_none(root) if has_other_files else []
    uid_count = Counter(info.uid for info in series)
    for info in series:
        series_files = sorted(f for f in (Path(p).resolve() for p in info.files) if f in file_set)
        if not series_files:
            continue
        claimed.update(series_files)
        source = Path(os.path.commonpath([str(f.parent) for f in series_files])).relative_to(root).as_posix() or "."
        # A UID is a stable key unless it is missing or split into several series (mixed geometries).
        key = f"dicom:{info.uid}" if info.uid and uid_count[info.uid] == 1 else f"dicom:{info.uid}:{source}:{series_files[0].name}"
        found.append(("dicom_series", source, key, series_files, str(info.uid)))
    for p in files:
        rel = p.relative_to(root).as_posix()
        family = _family(p)
        if family == "volume":
            found.append(("volume", rel, f"file:{rel}", [p], ""))
        elif family in ("raster", "slide"):  # a slide: segmented tile by tile (medseg.workflows.slide)
            if spatial_dims in (None, 2):
                found.append((family, rel, f"file:{rel}", [p], ""))
            else:
                ignored.append(rel)
        elif p.resolve() not in claimed:
            if _looks_like_dicom(p):
                found.append(("dicom_file", rel, f"file:{rel}", [p], ""))
            else:
                ignored.append(rel)

    seen: set[str] = set()
    for kind, source, key, case_files, uid in found:
        case_id = _path_id(source) if id_style == "path" else _hash_id("s" if kind == "dicom_series" else "f", key)
        if case_id in seen:  # readable ids: two series in one folder, or two paths that sanitise alike
            case_id = f"{case_id}-{hashlib.sha256(key.encode()).hexdigest()[:6]}"
        seen.add(case_id)
        gt = _gt_for(source, case_id, gt_root)
        all_files = tuple(str(f) for f in case_files) + ((gt,) if gt else ())
        cases.append(Case(case_id, kind, source, all_files, uid, gt))
    cases.sort(key=lambda c: (c.source, c.case_id))
    return Discovery(root, cases, ignored)


def discover_dicomweb(query: Any, pacs: Any) -> Discovery:
    """The image series a DICOMweb query finds, one case each (SEG, RTSTRUCT, SR and other non-images left out).

    ``query`` is a :class:`~medseg.pacs.DicomwebQuery`, ``pacs`` a :class:`~medseg.pacs.DicomwebPacs`. Case
    ids are those of the same series on disk (``s-`` + hash of the SeriesInstanceUID).

    Raises
    ------
    medseg.errors.PacsError
        When the server does not answer the searches.
    """
    from medseg.io.dicom_frames import NON_IMAGE_MODALITIES

    cases, ignored = [], []
    for record in pacs.find_series(query.filters):
        source = f"studies/{record.study_uid}/series/{record.series_uid}"
        if record.modality.upper() in NON_IMAGE_MODALITIES:
            ignored.append(f"{source} ({record.modality})")
            continue
        uids = pacs.instance_uids(record.study_uid, record.series_uid)
        remote_fp = hashlib.sha256("\n".join(uids).encode()).hexdigest()
        cases.append(Case(_hash_id("s", f"dicom:{record.series_uid}"), "dicomweb_series", source, (),
                          record.series_uid, None, record.study_uid, remote_fp))
    cases.sort(key=lambda c: (c.source, c.case_id))
    return Discovery(query.display, cases, ignored)


def write_case_sources(output_dir: Path, discovery: Discovery) -> Path:
    """Write ``case_sources.csv`` (case id -> source) beside the outputs, keeping rows of earlier runs' other cases."""
    path = Path(output_dir) / SOURCES_NAME
    rows: dict[str, dict[str, str]] = {}
    if path.exists():
        with open(path, newline="") as fh:
            rows = {r["case_id"]: r for r in csv.DictReader(fh)}
    for c in discovery.cases:
        rows[c.case_id] = {
            "case_id": c.case_id, "kind": c.kind, "source": c.source, "series_uid": c.series_uid,
            "n_files": str(len(c.files) - (1 if c.gt else 0)), "ground_truth": c.gt or "",
            "input_dir": str(discovery.input_dir),
        }
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["case_id", "kind", "source", "series_uid", "n_files", "ground_truth", "input_dir"])
    writer.writeheader()
    writer.writerows(sorted(rows.values(), key=lambda r: r["case_id"]))
    return write_text_atomic(path, buf.getvalue())
