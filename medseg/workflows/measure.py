"""``medseg measure``: tables of existing label maps (a file, or a folder paired with a folder of scans).

With ``chest=True`` the table has one row per label map instead: the lung and
heart areas and cardiothoracic ratio of a chest radiograph (:mod:`medseg.chest`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from medseg.atomic import atomic_path
from medseg.chest import chest_measurements
from medseg.errors import ReadError, WriteError
from medseg.io import load
from medseg.io.formats import is_image_file, strip_image_suffix
from medseg.measurement import measure

TABLE_SUFFIXES = (".csv", ".json", ".parquet")


def write_table(table: pd.DataFrame, path: Path) -> Path:
    """Write a DataFrame as CSV, JSON (a list of records) or Parquet, chosen by suffix, atomically."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise WriteError(f"unknown table format {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}", path)
    try:
        with atomic_path(path) as tmp:
            if suffix == ".csv":
                table.to_csv(tmp, index=False)
            elif suffix == ".json":
                table.to_json(tmp, orient="records", indent=1)
            else:
                table.to_parquet(tmp, index=False)
    except OSError as exc:
        raise WriteError(f"cannot write the table ({exc})", path) from exc
    return path


def totalsegmentator_statistics(labels_path: Path, image_path: Path | None,
                                label_names: Mapping[int, str] | None = None) -> dict[str, dict[str, object]]:
    """TotalSegmentator's ``statistics.json`` of a label map: ``{name: {"volume": mm3, "intensity": mean}}``.

    Every named structure is listed (absent ones with volume 0 and intensity 0,
    as TotalSegmentator writes them); the intensity is the mean of the scan
    inside the structure (the label map is matched to the scan in world space),
    rounded to 5 decimals like TotalSegmentator's. Where TotalSegmentator
    writes zeroes for a structure cut by the image edge, medseg keeps the
    measured values and adds ``"touches_border": true`` (its size is a lower
    bound); every entry carries the flag.

    ``label_names`` default to the values present in the map, named ``label_<value>``.
    """
    labels = load(labels_path)
    scan = load(image_path) if image_path is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = measure(labels, scan, shape=False)
    rows = {int(r["label"]): r for r in table.to_dict("records")}
    names = dict(label_names) if label_names else {v: f"label_{v}" for v in sorted(rows)}
    intensity = next((c for c in table.columns if c.startswith("mean_") and not c.startswith("mean_intensity_c")),
                     None)  # fmt: skip
    size = "volume_mm3" if "volume_mm3" in table.columns else next(
        (c for c in ("area_mm2", "area_um2", "area_px", "volume_px") if c in table.columns), None)
    stats: dict[str, dict[str, object]] = {}
    for value, name in sorted(names.items()):
        row = rows.get(int(value))
        if row is None:
            stats[name] = {"volume": 0.0, "intensity": 0.0, "touches_border": False}
            continue
        mean = row.get(intensity) if intensity else None
        stats[name] = {
            "volume": float(row[size]) if size else float(row["voxel_count"]),
            "intensity": round(float(mean), 5) if mean is not None else 0.0,
            "touches_border": bool(row["touches_border"]),
        }
    return stats


def _label_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p) and p.suffix.lower() != ".dcm")


def _stem(path: Path) -> str:
    """File name without its format suffix (``case01.nii.gz`` -> ``case01``)."""
    return strip_image_suffix(path.name)


def _matching_image(label_file: Path, image_folder: Path) -> Path:
    """The image for ``label_file`` in ``image_folder``: same name, or the nnU-Net ``<case>_0000`` name."""
    stem = _stem(label_file)
    for candidate in sorted(image_folder.iterdir()):
        if _stem(candidate) in (stem, f"{stem}_0000"):
            return candidate
    raise ReadError(f"no image named {stem}.* or {stem}_0000.* for label map {label_file.name}", image_folder)


def measure_files(
    labels: Path,
    image: Path | None = None,
    *,
    label_names: Mapping[int, str] | None = None,
    instances: bool = False,
    shape: bool = True,
    connectivity: int | None = None,
    chest: bool = False,
    warn: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, int]:
    """Measure a label map (or every label map in a folder) with :func:`medseg.measure`.

    A folder of label maps pairs with a folder of scans by name (``case.nii.gz``
    with ``case.*`` or nnU-Net's ``case_0000.*``); the table then starts with a
    ``file`` column. ``chest``: one row per label map with the chest
    radiograph columns of :meth:`medseg.chest.ChestMeasurement.row` (a mask
    without a pixel size takes its radiograph's). ``warn`` receives each
    measurement warning (unknown spacing, empty maps). Returns the table and
    the number of label maps.
    """
    if not labels.exists():
        raise ReadError("no such file or folder", labels)
    if labels.is_dir():
        files = _label_files(labels)
        if not files:
            raise ReadError("no label map files (NIfTI, NRRD, MHA, PNG, TIFF) in this folder", labels)
        if image is not None and not image.is_dir():
            raise ReadError("with a folder of label maps, --image must be a folder of images", image)
        pairs = [(f, _matching_image(f, image) if image else None) for f in files]
    else:
        pairs = [(labels, image)]
    tables = []
    for label_file, image_file in pairs:
        scan = load(image_file) if image_file else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if chest:
                table = pd.DataFrame([chest_measurements(load(label_file), scan, label_names=label_names).row()])
            else:
                table = measure(
                    load(label_file),
                    scan,
                    label_names=label_names,
                    instances=instances,
                    shape=shape,
                    connectivity=connectivity,
                )
        if warn is not None:
            for warning in caught:
                warn(str(warning.message))
        if labels.is_dir():
            table.insert(0, "file", label_file.name)
        tables.append(table)
    result = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    return result, len(pairs)
