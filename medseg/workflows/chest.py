"""``medseg ctr``: segment chest radiographs and tabulate lung and heart areas and the cardiothoracic ratio.

Inputs are radiograph files (DICOM CR/DX, PNG, JPEG, TIFF, BMP) or folders: every
image file directly inside a folder (``.dcm`` included) is one radiograph, and a
folder without such files is read as one DICOM series (files without suffix). The pixel size is what
:func:`medseg.io.load` finds (DICOM PixelSpacing or ImagerPixelSpacing, PNG
``pHYs``, JPEG JFIF, TIFF resolution); a radiograph without one keeps its row,
with the physical columns empty and ``spacing_known`` False.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medseg.chest import ROW_COLUMNS, chest_measurements
from medseg.errors import MedsegError, ReadError
from medseg.io import load, save
from medseg.io.formats import is_image_file
from medseg.segmenters.base import Segmenter
from medseg.workflows.case import postprocess_rules
from medseg.workflows.segment import output_format, output_stem


def radiograph_paths(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The radiographs named by ``inputs``: each file, and each image file of a folder (sorted by name).

    A folder holding no image-suffixed file stands for itself (a DICOM series).

    Raises
    ------
    medseg.errors.ReadError
        For a path that does not exist.
    """
    paths: list[Path] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise ReadError("no such file or folder", item)
        files = sorted(p for p in item.iterdir() if p.is_file() and is_image_file(p)) if item.is_dir() else []
        paths.extend(files or [item])
    return paths


def ctr_table(
    segmenter: Segmenter,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    labels_out: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Segment each radiograph, post-process by the segmenter's rules, and measure it with :mod:`medseg.chest`.

    Parameters
    ----------
    segmenter : Segmenter
        A chest radiograph segmenter labelling right lung, left lung and heart
        (e.g. a model trained with ``configs/xray_chest.yaml``).
    inputs : sequence of path-like
        See :func:`radiograph_paths`.
    labels_out : path-like, optional
        Folder for the label maps (PNG for PNG/JPEG inputs, NIfTI for DICOM).

    Returns
    -------
    pandas.DataFrame
        One row per radiograph: ``file``, the columns of
        :meth:`medseg.chest.ChestMeasurement.row`, and ``error`` (why a
        radiograph could not be read or segmented; empty otherwise).
    """
    from medseg.postprocess import postprocess

    rules = postprocess_rules(segmenter)
    rows = []
    for path in radiograph_paths(inputs):
        try:
            image = load(path)
            labels = postprocess(segmenter.segment(image), rules).semantic
            if labels_out is not None:
                suffix = output_format(path, labels.ndim, None).suffixes[0]
                save(labels, Path(labels_out) / f"{output_stem(path)}{suffix}")
            rows.append({"file": str(path), **chest_measurements(labels, image).row(), "error": ""})
        except MedsegError as exc:  # one unreadable radiograph is a row saying why, not the end of the table
            rows.append({"file": str(path), "error": str(exc)})
    return pd.DataFrame(rows, columns=["file", *ROW_COLUMNS, "error"])
