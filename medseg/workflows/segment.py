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


def segment_files(
    segmenter: Segmenter,
    inputs: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    output_format_name: str | None = None,
    probabilities: bool = False,
    **segment_options: Any,
) -> list[Path]:
    """Read each input with :func:`medseg.io.load`, segment it, write ``OUT/<stem>.<suffix>``.

    Parameters
    ----------
    segmenter : Segmenter
        Any segmenter (:func:`medseg.load_segmenter`).
    inputs : list of path-like
        Image files or DICOM series folders.
    out_dir : path-like
        Output folder (created).
    output_format_name : str, optional
        ``nifti``, ``nrrd``, ``mha``, ``png`` or ``tiff``; default: see :func:`output_format`.
    probabilities : bool
        Also write ``OUT/<stem>_prob_<label>.nii.gz`` per foreground label (float32, on the input grid);
        needs a segmenter with ``probabilities(image)``.
    **segment_options
        Passed to ``segmenter.segment`` (e.g. ``tta=True`` for network models).

    Returns
    -------
    list of Path
        The label-map paths, in input order.
    """
    from medseg.errors import ModelError, WriteError
    from medseg.io import load, save

    if probabilities and not hasattr(segmenter, "probabilities"):
        raise ModelError(f"segmenter {segmenter.name!r} gives no probabilities")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise WriteError("is a file, but the output of segment is a folder", out)
    written = []
    for path in inputs:
        image = load(path)
        labels = segmenter.segment(image, **segment_options)
        fmt = output_format(path, image.ndim, output_format_name)
        stem = output_stem(path)
        written.append(save(labels, out / f"{stem}{fmt.suffixes[0]}"))
        if probabilities:
            probs = segmenter.probabilities(image, **segment_options)
            for index, name in segmenter.label_names.items():
                prob = image.with_array(probs.array[..., index], intensity_unit="")
                save(prob, out / f"{stem}_prob_{name}.nii.gz")
    return written
