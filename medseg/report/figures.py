"""Figures for notebooks and the HTML report: overlays, box plots, volume agreement.

All functions return a ``matplotlib.figure.Figure`` (drawn with the Agg
backend, no display needed); :func:`png_bytes` turns one into PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries

from medseg.io.image import Image

REF_COLOUR = "#00c853"  # reference contours: green
PRED_COLOUR = "#ff1744"  # prediction contours: red
_PLANES = (("axial", 2), ("coronal", 1), ("sagittal", 0))


def png_bytes(fig: Figure, dpi: int = 80) -> bytes:
    """PNG encoding of ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _plane(arr: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A 2D slice displayed with rows = the later remaining axis, columns = the earlier one."""
    return np.take(arr, index, axis=axis).T


def _aspect(spacing: Sequence[float], axis: int) -> float:
    rest = [s for a, s in enumerate(spacing) if a != axis]
    return rest[1] / rest[0]


def lps_order(image: Image) -> tuple[list[int], list[int]]:
    """The array axis running along each world axis (L, P, S), and the view axes to flip so they increase.

    An image too oblique to tell keeps its stored order (no flips).
    """
    world_axis = np.argmax(np.abs(image.direction), axis=0)  # world axis each array axis runs along
    if sorted(world_axis.tolist()) != list(range(image.ndim)):
        return list(range(image.ndim)), []
    order = [int(a) for a in np.argsort(world_axis)]
    return order, [a for a in range(image.ndim) if image.direction[a, order[a]] < 0]


def _lps_view(arrays: list[np.ndarray | None], image: Image) -> tuple[list[np.ndarray | None], tuple[float, ...]]:
    """Arrays re-ordered and flipped so that axes 0, 1, 2 point to patient left, posterior, superior.

    Display then follows the radiological convention whatever order the file
    stored its voxels in (e.g. the LAS or RAS grids of many NIfTI writers).
    """
    order, flips = lps_order(image)
    spacing = tuple(image.spacing[a] for a in order)
    out = []
    for arr in arrays:
        if arr is None:
            out.append(None)
            continue
        v = np.transpose(arr, tuple(order) + tuple(range(image.ndim, arr.ndim)))
        out.append(np.flip(v, axis=flips) if flips else v)
    return out, spacing


def _window(scan: np.ndarray, unit: str) -> tuple[float, float]:
    if unit == "HU":
        return -160.0, 240.0  # soft-tissue window
    lo, hi = np.percentile(scan, [1, 99]) if scan.size else (0.0, 1.0)
    return float(lo), float(hi if hi > lo else lo + 1)


def _instance_rgba(instances: np.ndarray) -> np.ndarray:
    """Each instance filled in its own (seeded, random) colour, half transparent; background clear."""
    ids, inverse = np.unique(instances, return_inverse=True)
    colours = np.random.default_rng(0).uniform(0.2, 1.0, (len(ids), 4))
    colours[:, 3] = 0.45
    colours[ids == 0] = 0.0
    return colours[inverse.reshape(instances.shape)]


def _draw(
    ax,
    background: np.ndarray | None,
    ref: np.ndarray,
    pred: np.ndarray,
    aspect: float,
    window: tuple[float, float],
    title: str,
    instances: bool,
) -> None:
    if background is not None:
        ax.imshow(background, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect, interpolation="nearest")
    else:
        ax.imshow(np.zeros(ref.shape), cmap="gray", vmin=0, vmax=1, aspect=aspect)
    if instances:
        ax.imshow(_instance_rgba(pred), aspect=aspect, interpolation="nearest")
        edges = np.zeros((*ref.shape, 4))
        edges[find_boundaries(ref, mode="inner")] = to_rgba(REF_COLOUR)
        ax.imshow(edges, aspect=aspect, interpolation="nearest")
    else:
        for mask, colour in ((ref, REF_COLOUR), (pred, PRED_COLOUR)):
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1.0)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def overlay(
    ref: Image | np.ndarray,
    pred: Image | np.ndarray | None = None,
    scan: Image | np.ndarray | None = None,
    label: int | None = None,
    instances: bool = False,
    title: str = "",
) -> Figure:
    """Reference (green) and predicted (red) contours on the scan.

    Parameters
    ----------
    ref, pred : Image or ndarray
        Reference and predicted label maps on one grid (``pred`` optional).
    scan : Image or ndarray, optional
        The image to draw under the contours (CT in a soft-tissue window).
    label : int, optional
        3D: the structure to show; default the largest reference label.
    instances : bool
        Instance maps: fill each predicted instance in its own colour and
        outline every reference instance (3D: planes through the centre of
        all instances).
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        3D: three orthogonal planes through the structure's centre
        (axial, coronal, sagittal); 2D: the whole image.
    """
    r = np.asarray(ref.array if isinstance(ref, Image) else ref)
    p = np.zeros_like(r) if pred is None else np.asarray(pred.array if isinstance(pred, Image) else pred)
    s = None if scan is None else np.asarray(scan.array if isinstance(scan, Image) else scan)
    if s is not None and s.ndim == r.ndim + 1:  # RGB / multi-channel: grey value for display
        s = s.mean(axis=-1)
    spacing = (1.0,) * r.ndim
    if isinstance(ref, Image):
        (r, p, s), spacing = _lps_view([r, p, s], ref)
    unit = scan.intensity_unit if isinstance(scan, Image) else ""
    window = _window(s, unit) if s is not None else (0.0, 1.0)
    if r.ndim == 2:
        fig = Figure(figsize=(6.5, 6.5))
        ax = fig.add_subplot()
        rr, pp = (r, p) if instances else ((r == label, p == label) if label else (r > 0, p > 0))
        _draw(ax, None if s is None else s.T, rr.T, pp.T, spacing[1] / spacing[0], window, title, instances)
        return fig
    if instances:  # every instance, planes through the centre of all of them
        rm, pm = r, p
    else:
        if label is None:
            counts = np.bincount(r.ravel().astype(np.int64)) if r.any() else np.bincount(p.ravel().astype(np.int64))
            counts[0] = 0
            label = int(np.argmax(counts)) if counts.any() else 0
        rm, pm = r == label, p == label
    where = np.argwhere(rm > 0) if rm.any() else np.argwhere(pm > 0)
    centre = where.mean(axis=0).round().astype(int) if len(where) else np.array(r.shape) // 2
    fig = Figure(figsize=(9.0, 3.2))
    for i, (name, axis) in enumerate(_PLANES):
        ax = fig.add_subplot(1, 3, i + 1)
        k = int(centre[axis])
        bg = None if s is None else _plane(s, axis, k)
        _draw(
            ax, bg, _plane(rm, axis, k), _plane(pm, axis, k), _aspect(spacing, axis), window, f"{name} {k}", instances
        )
        if axis != 2:
            ax.invert_yaxis()  # superior up
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def case_figures(
    scan: Image | None, pred: Image, ref: Image, rows: pd.DataFrame, instances: bool, max_structures: int = 4
) -> list[tuple[str, bytes]]:
    """Overlay PNGs of one case for the report: the worst-Dice structures first (3D), the image (2D)."""
    if instances or ref.ndim == 2:
        fig = overlay(ref, pred, scan, instances=instances)
        return [("reference green, prediction " + ("filled" if instances else "red"), png_bytes(fig))]
    shown = rows.sort_values("dice", na_position="last").head(max_structures)
    out = []
    for _, row in shown.iterrows():
        if row["empty_in"] == "both":
            continue
        name = f"{int(row['label'])} {row['name']}".strip()
        fig = overlay(ref, pred, scan, label=int(row["label"]), title=f"label {name}: Dice {row['dice']:.3f}")
        out.append((f"label {name}", png_bytes(fig)))
    return out


def _size_columns(per_case: pd.DataFrame) -> tuple[str, str, str]:
    if "ref_volume_ml" in per_case:
        return "ref_volume_ml", "pred_volume_ml", "mL"
    return "ref_area_mm2", "pred_area_mm2", "mm²"


def plot_volumes(per_case: pd.DataFrame) -> Figure:
    """Predicted vs reference volume (identity line) and a Bland-Altman plot, all labels pooled.

    Bland-Altman: difference (pred - ref) against the mean of the two, with
    the mean difference and the 95% limits of agreement (mean +- 1.96 sd).
    """
    ref_col, pred_col, unit = _size_columns(per_case)
    d = per_case[[ref_col, pred_col]].astype(float).dropna()
    fig = Figure(figsize=(9.0, 4.0))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    top = float(max(d.max().max(), 1e-9)) if len(d) else 1.0
    ax1.scatter(d[ref_col], d[pred_col], s=12, alpha=0.7)
    ax1.plot([0, top], [0, top], color="grey", lw=0.8)
    ax1.set_xlabel(f"reference ({unit})")
    ax1.set_ylabel(f"prediction ({unit})")
    ax1.set_title("volume agreement", fontsize=9)
    mean = (d[ref_col] + d[pred_col]) / 2
    diff = d[pred_col] - d[ref_col]
    ax2.scatter(mean, diff, s=12, alpha=0.7)
    if len(diff) > 1:
        bias, sd = float(diff.mean()), float(diff.std(ddof=1))
        for y, style in ((bias, "-"), (bias + 1.96 * sd, "--"), (bias - 1.96 * sd, "--")):
            ax2.axhline(y, color="grey", ls=style, lw=0.8)
        ax2.set_title(f"Bland-Altman: bias {bias:.3g} {unit}, LoA ±{1.96 * sd:.3g}", fontsize=9)
    ax2.set_xlabel(f"mean of prediction and reference ({unit})")
    ax2.set_ylabel(f"prediction - reference ({unit})")
    fig.tight_layout()
    return fig


def box_plots(per_case: pd.DataFrame, metrics: Sequence[str] = ("dice", "hd95_mm")) -> Figure:
    """One box plot per metric, a box per label with finite values (n shown under each label)."""
    metrics = [m for m in metrics if m in per_case]
    n_labels = per_case["label"].nunique() if "label" in per_case else 1
    fig = Figure(figsize=(min(16.0, max(6.0, 0.4 * n_labels + 2)), 2.8 * max(1, len(metrics))))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(len(metrics), 1, i + 1)
        groups, names = [], []
        for label, rows in per_case.groupby("label", sort=True):
            v = pd.to_numeric(rows[metric], errors="coerce").to_numpy(float)
            v = v[np.isfinite(v)]
            if v.size:
                groups.append(v)
                name = rows["name"].iloc[0] if "name" in rows and rows["name"].iloc[0] else str(label)
                names.append(f"{name}\nn={v.size}")
        if groups:
            ax.boxplot(groups, tick_labels=names, showfliers=True)
        ax.set_ylabel(metric)
        ax.set_xlabel("label")
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig
