"""``medseg segment``: read each input, segment it with any Segmenter, write its label map beside the others."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medseg.io.formats import Format, format_named, label_output_format, strip_image_suffix
from medseg.segmenters.base import Segmenter


def output_stem(path: str | os.PathLike[str]) -> str:
    """A file-name stem for outputs derived from an input path (``ct.nii.gz`` -> ``ct``, a folder -> its name)."""
    return strip_image_suffix(Path(path).name)


def output_format(source: str | os.PathLike[str], ndim: int, requested: str | None) -> Format:
    """The format a label map of ``source`` is written in: ``requested``, else the input's own family.

    PNG/JPEG/BMP inputs give PNG and TIFF gives TIFF (the mask overlays the
    input pixel for pixel); volumes and DICOM give NIfTI.
    """
    return format_named(requested) if requested else label_output_format(source, ndim)


def load_input(path: str | os.PathLike[str], mpp: float | None = None) -> Any:
    """:func:`medseg.io.load` of one input; ``mpp`` (um per pixel) sets the pixel size of a 2D raster picture
    (PNG, JPEG, TIFF: over what its file states, as for slides).

    Raises
    ------
    medseg.errors.GeometryError
        ``mpp`` is not a positive number.
    """
    import dataclasses
    import math

    from medseg.errors import GeometryError
    from medseg.io import load
    from medseg.io.formats import format_of

    image = load(path)
    fmt = format_of(path)
    if mpp is None or fmt is None or fmt.family != "raster" or image.ndim != 2:
        return image
    if not (math.isfinite(mpp) and mpp > 0):
        raise GeometryError(f"--mpp must be a positive number of micrometres per pixel, got {mpp}", path)
    return dataclasses.replace(
        image, spacing=(mpp / 1000.0,) * 2, spacing_known=True, meta={**image.meta, "spacing_source": "caller"},
        warnings=[w for w in image.warnings if not w.startswith("pixel spacing unknown")],
    )


def save_options(fmt: Format, source: Any, segmenter: Segmenter) -> dict[str, Any]:
    """Writer options for a label map of ``source``: a DICOM SEG or RTSTRUCT names its source series and model."""
    return {"source": source, "segmenter": segmenter} if fmt.family == "dicom" else {}


def segment_files(
    segmenter: Segmenter,
    inputs: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    output_format_name: str | None = None,
    probabilities: bool = False,
    slide_options: dict[str, Any] | None = None,
    postprocess: bool = True,
    **segment_options: Any,
) -> list[Path]:
    """Read each input with :func:`medseg.io.load`, segment it, write ``OUT/<stem>.<suffix>``.

    A whole-slide image (:func:`medseg.io.slide.is_slide_file`: SVS, NDPI, MRXS, ..., pyramidal TIFF) is
    segmented tile by tile instead, into the folder ``OUT/<stem>/`` (cell table, QuPath GeoJSON, summary:
    :func:`medseg.workflows.slide.segment_slide`).

    Parameters
    ----------
    segmenter : Segmenter
        Any segmenter (:func:`medseg.load_segmenter`).
    inputs : list of path-like
        Image files or DICOM series folders.
    out_dir : path-like
        Output folder (created).
    output_format_name : str, optional
        ``nifti``, ``nrrd``, ``mha``, ``png``, ``tiff``, ``dicom-seg`` (a DICOM SEG of a DICOM input series,
        ``<stem>.dcm``) or ``rtstruct``; default: see :func:`output_format`.
    probabilities : bool
        Also write ``OUT/<stem>_prob_<label>.nii.gz`` per foreground label (float32, on the input grid);
        needs a segmenter with ``probabilities(image)``.
    slide_options : dict, optional
        Keyword arguments of :func:`~medseg.workflows.slide.segment_slide` for slide inputs (``mpp``,
        ``tile``, ``overlap``, ``tissue``, ``label_tiff``, ...); ``mpp`` also sets the pixel size of 2D pictures.
    postprocess : bool
        Apply the segmenter's post-processing rules (:func:`~medseg.workflows.case.postprocess_rules`, as
        ``medseg batch`` does) to the label map written; False writes the network's own map.
    **segment_options
        Passed to ``segmenter.segment`` (e.g. ``tta=True`` for network models).

    Returns
    -------
    list of Path
        The label-map paths (the output folder of a slide), in input order.
    """
    from medseg.errors import ModelError, WriteError
    from medseg.io import save
    from medseg.postprocess import postprocess as apply_postprocess
    from medseg.workflows.case import postprocess_rules

    if probabilities and not hasattr(segmenter, "probabilities"):
        raise ModelError(f"segmenter {segmenter.name!r} gives no probabilities")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise WriteError("is a file, but the output of segment is a folder", out)
    from medseg.io.slide import is_slide_file

    written = []
    for path in inputs:
        if is_slide_file(path):
            from medseg.workflows.slide import segment_slide

            written.append(segment_slide(segmenter, path, out / output_stem(path), **(slide_options or {})).out_dir)
            continue
        image = load_input(path, (slide_options or {}).get("mpp"))
        labels = segmenter.segment(image, **segment_options)
        if postprocess:
            labels = apply_postprocess(labels, postprocess_rules(segmenter)).semantic
        fmt = output_format(path, image.ndim, output_format_name)
        stem = output_stem(path)
        written.append(save(labels, out / f"{stem}{fmt.suffixes[0]}", **save_options(fmt, path, segmenter)))
        if probabilities:
            probs = segmenter.probabilities(image, **segment_options)
            for index, name in segmenter.label_names.items():
                prob = image.with_array(probs.array[..., index], intensity_unit="")
                save(prob, out / f"{stem}_prob_{name}.nii.gz")
    return written
