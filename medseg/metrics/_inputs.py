"""Coercion of metric inputs: medseg Images (geometry checked) or arrays plus spacing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.errors import GeometryError, LabelError
from medseg.io.image import Image
from medseg.labelmap import label_values

LabelInput = Image | np.ndarray


def label_array(x: LabelInput, name: str) -> np.ndarray:
    """The unsigned integer voxel array of a label map given as an Image or an array.

    Raises
    ------
    medseg.errors.LabelError
        For multi-channel images, non-integer or negative values (see :func:`medseg.labelmap.label_values`).
    """
    if isinstance(x, Image):
        if x.channel_axis:
            raise LabelError(f"{name} has a channel axis; a label map has one integer per voxel", x.source)
        return label_values(x.array, x.source, name)
    return label_values(x, None, name)


def pair_arrays(
    pred: LabelInput, ref: LabelInput, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Return ``(pred_array, ref_array, spacing_mm)`` after checking the two share a grid.

    Images must lie on the same grid (see :meth:`Image.same_grid`); the
    spacing then comes from the reference unless given. Arrays need equal
    shapes; ``spacing`` defaults to 1 mm per axis.
    """
    p, r = label_array(pred, "prediction"), label_array(ref, "reference")
    if isinstance(pred, Image) and isinstance(ref, Image) and not ref.same_grid(pred):
        raise GeometryError(
            f"prediction ({pred.source or 'in memory'}) and reference ({ref.source or 'in memory'}) are on different "
            "grids; resample the prediction first (medseg.io.resample.resample_to)",
            pred.source,
        )
    if p.shape != r.shape:
        raise GeometryError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    if spacing is None:
        spacing = (
            ref.spacing if isinstance(ref, Image) else pred.spacing if isinstance(pred, Image) else (1.0,) * r.ndim
        )
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != r.ndim or any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise GeometryError(f"spacing {spacing} does not give a positive size for each of the {r.ndim} axes")
    return p, r, spacing
