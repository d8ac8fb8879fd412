"""``medseg.show``: an image, its label maps and a comparison, drawn in world millimetres.

Volumes are shown in the radiological convention whatever order their file
stored the voxels in: axial views with the patient's right on the left and
anterior up, coronal and sagittal views with superior up (see
:func:`~medseg.report.figures.lps_order`). Each panel is placed by its world
extent, so the tick labels are world coordinates in mm (pixels when the
spacing is unknown) and the aspect ratio is the voxel spacing's. 2D images
(radiographs, microscopy tiles) are shown as stored, column ``i`` across and
row ``j`` down.

Label maps on another grid than the image are drawn in world space: reordered
or resampled (nearest neighbour) onto the image's grid with
:func:`medseg.resample_to`, so a NIfTI label map with flipped voxel order lines
up with its DICOM series. Figures are plain :class:`matplotlib.figure.Figure`
objects: the global backend is never touched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import hsv_to_rgb, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from skimage.segmentation import find_boundaries

from medseg.io.image import Image, LabelMap
from medseg.io.resample import resample_to
from medseg.labelmap import as_label_map, drawn_on, length_unit, unit_scale
from medseg.report.figures import lps_order

if TYPE_CHECKING:
    from matplotlib.axes import Axes

WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "soft_tissue": (40.0, 400.0),
}
"""CT window presets, ``(level, width)`` in HU."""
PLANES = ("axial", "coronal", "sagittal")
_FIXED_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}  # the L/P/S view axis each plane holds constant
_SIDES = {"axial": "RLAP", "coronal": "RLSI", "sagittal": "APSI"}  # left, right, top, bottom edge of the panel
COMPARE = {1: ("TP", "#00c853"), 2: ("FP", "#ff1744"), 3: ("FN", "#2979ff"), 4: ("wrong label", "#ffab00")}
"""Comparison codes: true positive, false positive, false negative, and labelled as another structure (FP and FN)."""


_PALETTE = [c for name in ("tab10", "tab20b", "tab20c") for c in colormaps[name].colors]


def label_colour(value: int) -> tuple[float, float, float, float]:
    """The RGBA colour label ``value`` is drawn in (tab10, then tab20b and tab20c; the same in every figure)."""
    return to_rgba(_PALETTE[(int(value) - 1) % len(_PALETTE)])


def label_rgba(labels: np.ndarray, alpha: float, visible: Sequence[int] | None = None) -> np.ndarray:
    """``(..., 4)`` float RGBA: each visible label in its colour at opacity ``alpha``, everything else clear."""
    values = np.unique(labels)
    lut = np.zeros((int(values.max(initial=0)) + 1, 4))
    for v in values[values > 0]:
        if visible is None or int(v) in visible:
            lut[v] = (*label_colour(int(v))[:3], alpha)
    return lut[labels]


def comparison_codes(truth: np.ndarray, prediction: np.ndarray, label: int | None = None) -> np.ndarray:
    """Per voxel: 0 agreeing background, then the codes of :data:`COMPARE` (uint8).

    With ``label`` only that structure counts (``truth == label`` against
    ``prediction == label``); otherwise every label, a voxel labelled as
    another structure being ``wrong label``.
    """
    if label is not None:
        truth, prediction = truth == label, prediction == label
    t, p = truth > 0, prediction > 0
    same = truth == prediction
    codes = np.zeros(truth.shape, np.uint8)
    codes[t & p & same] = 1
    codes[p & ~t] = 2
    codes[t & ~p] = 3
    codes[t & p & ~same] = 4
    return codes


def comparison_counts(codes: np.ndarray) -> dict[str, int]:
    """Voxel counts ``{"TP", "FP", "FN"}`` of :func:`comparison_codes` (a wrong label counts as FP and FN)."""
    n = np.bincount(codes.ravel(), minlength=5)
    return {"TP": int(n[1]), "FP": int(n[2] + n[4]), "FN": int(n[3] + n[4])}


def on_image_grid(labels: Image, image: Image) -> LabelMap:
    """``labels`` on ``image``'s grid: as is, drawn on it (:func:`~medseg.labelmap.drawn_on`), else resampled
    in world space (nearest neighbour; exact for flipped or permuted voxel orders)."""
    if labels.same_grid(image):
        return as_label_map(labels)
    drawn = drawn_on(labels, image)
    return drawn if drawn is not None else as_label_map(resample_to(labels, image, interpolation="nearest"))


@dataclass(frozen=True)
class Panel:
    """One 2D view, ready for ``imshow(origin="upper", extent=extent)``: row 0 is the top of the screen.

    ``grey`` is the image (2D, or ``(rows, cols, 3)`` for RGB), ``labels`` /
    ``prediction`` the label maps on the same pixels (or None); ``extent`` is
    ``(left, right, bottom, top)`` in world mm (pixels when the spacing is unknown).
    """

    grey: np.ndarray | None
    labels: np.ndarray | None
    prediction: np.ndarray | None
    extent: tuple[float, float, float, float]
    xlabel: str
    ylabel: str
    title: str
    sides: str = ""


class Volume:
    """An image and label maps on its grid, in view order: L, P, S for 3D (as stored for 2D).

    Parameters
    ----------
    image : Image or None
        The picture; None shows the label maps on black.
    labels, prediction : Image, optional
        Label maps; put on the image's grid by :func:`on_image_grid`.
    """

    def __init__(self, image: Image | None, labels: Image | None = None, prediction: Image | None = None) -> None:
        grid = image if image is not None else labels if labels is not None else prediction
        if grid is None:
            raise ValueError("nothing to show: give an image or a label map")
        self.grid = grid
        self.labels = None if labels is None else on_image_grid(labels, grid)
        self.prediction = None if prediction is None else on_image_grid(prediction, grid)
        named = self.labels if self.labels is not None else self.prediction
        self.label_names = dict(named.label_names) if named is not None else {}
        self.order, self.flips = lps_order(grid) if grid.ndim == 3 else ([0, 1], [])
        self.unit = length_unit(grid)  # mm; um for microscopy; px without spacing
        self.image = image
        self.views = {
            key: None if img is None else self._view(img.array)
            for key, img in (("image", image), ("labels", self.labels), ("prediction", self.prediction))
        }
        self.shape = tuple(grid.shape[a] for a in self.order)
        self.coords = tuple(self._coords(a) for a in range(grid.ndim))

    def _view(self, arr: np.ndarray) -> np.ndarray:
        nd = self.grid.ndim
        v = np.transpose(arr, tuple(self.order) + tuple(range(nd, arr.ndim)))
        return np.flip(v, axis=self.flips) if self.flips else v

    def _coords(self, a: int) -> np.ndarray:
        """World coordinate of the voxel centres along view axis ``a`` in :attr:`unit`, increasing (indices without
        spacing)."""
        axis = self.order[a]
        n = self.grid.shape[axis]
        if not self.grid.spacing_known:
            return np.arange(n, dtype=float)
        step = self.grid.direction[a, axis] * self.grid.spacing[axis]
        line = (self.grid.origin[a] + step * np.arange(n)) * unit_scale(self.unit)
        return line[::-1] if step < 0 else line

    def array_index(self, view_index: Sequence[int]) -> tuple[int, ...]:
        """The stored array's index of a voxel given by its view index."""
        out = [0] * self.grid.ndim
        for a, v in enumerate(view_index):
            axis = self.order[a]
            out[axis] = self.grid.shape[axis] - 1 - int(v) if a in self.flips else int(v)
        return tuple(out)

    def view_index_of(self, world: Sequence[float]) -> tuple[int, ...]:
        """View index of the voxel nearest a world point (mm; pixels without spacing)."""
        scale = unit_scale(self.unit)
        return tuple(int(np.abs(c - w * scale).argmin()) for c, w in zip(self.coords, world, strict=True))

    def centre(self, structure: int | str | None = None) -> tuple[int, ...]:
        """View index of the centre of ``structure`` (label value or name), of all labels, or of the image."""
        lab = self.views["labels"] if self.views["labels"] is not None else self.views["prediction"]
        if lab is None:
            return tuple(n // 2 for n in self.shape)
        mask = lab == self.label_value(structure) if structure is not None else lab > 0
        where = np.argwhere(mask)
        if not len(where):
            return tuple(n // 2 for n in self.shape)
        return tuple(int(c) for c in where.mean(axis=0).round())

    def label_value(self, structure: int | str) -> int:
        """The label value of a structure given by value or name."""
        if isinstance(structure, int | np.integer):
            return int(structure)
        by_name = {str(v).lower(): k for k, v in self.label_names.items()}
        if str(structure).lower() not in by_name:
            known = ", ".join(f"{k}: {v}" for k, v in sorted(self.label_names.items())) or "none"
            raise ValueError(f"no structure named {structure!r} (labels: {known})")
        return by_name[str(structure).lower()]

    def _edges(self, a: int) -> tuple[float, float]:
        c = self.coords[a]
        half = (c[1] - c[0]) / 2 if len(c) > 1 else 0.5
        return float(c[0] - half), float(c[-1] + half)

    def layout(self, plane: str) -> tuple[int, int, int | None, bool]:
        """View axes across and down the screen, the fixed one (None in 2D), and whether rows run upward."""
        if self.grid.ndim == 2:
            return 0, 1, None, False
        fixed = _FIXED_AXIS[plane]
        h, v = (a for a in range(3) if a != fixed)
        return h, v, fixed, plane != "axial"  # coronal, sagittal: superior up

    def panel(self, plane: str, index: int) -> Panel:
        """The view through ``plane`` (ignored in 2D) at view index ``index`` along its fixed axis."""
        h, v, fixed, up = self.layout(plane)
        cut = tuple(index if a == fixed else slice(None) for a in range(self.grid.ndim))

        def display(arr: np.ndarray | None) -> np.ndarray | None:
            if arr is None:
                return None
            d = np.swapaxes(arr[cut], 0, 1)  # rows = the vertical axis
            return d[::-1] if up else d

        grey = self.views["image"]
        if grey is not None and self.image is not None and self.image.channel_axis:
            grey = grey[..., :3] if self.image.n_channels in (3, 4) else grey.mean(axis=-1)
        (left, right), (low, high) = self._edges(h), self._edges(v)
        u = self.unit
        title = "" if fixed is None else f"{plane} {'xyz'[fixed]} = {self.coords[fixed][index]:.1f} {u}"
        return Panel(
            display(grey),
            display(self.views["labels"]),
            display(self.views["prediction"]),
            (left, right, low, high) if up else (left, right, high, low),
            f"{'xyz'[h]} ({u})",
            f"{'xyz'[v]} ({u})",
            title,
            "" if fixed is None else _SIDES[plane],
        )

    def view_index_at(self, plane: str, index: int, row: int, col: int) -> tuple[int, ...]:
        """View index of the voxel at ``(row, col)`` of :meth:`panel` ``(plane, index)``."""
        h, v, fixed, up = self.layout(plane)
        out = [0] * self.grid.ndim
        out[h], out[v] = col, self.shape[v] - 1 - row if up else row
        if fixed is not None:
            out[fixed] = index
        return tuple(out)


def window_limits(
    image: Image | None, values: np.ndarray | None, window: str | tuple[float, float] | None
) -> tuple[float, float]:
    """Display range ``(low, high)`` of a window preset name or ``(level, width)``; by default the soft-tissue
    window for CT (HU) and the 1st-99th percentiles otherwise."""
    if window is None and image is not None and image.intensity_unit == "HU":
        window = "soft_tissue"
    if isinstance(window, str):
        key = window.lower().replace(" ", "_")
        if key not in WINDOWS:
            raise ValueError(f"unknown window {window!r}; presets: {', '.join(WINDOWS)}, or (level, width)")
        window = WINDOWS[key]
    if window is not None:
        level, width = map(float, window)
        return level - width / 2, level + width / 2
    if values is None or not values.size:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def _rgb(tile: np.ndarray) -> np.ndarray:
    """An RGB tile as imshow takes it: uint8 as is, anything else scaled by its 1st-99th percentiles."""
    if tile.dtype == np.uint8:
        return tile
    lo, hi = np.percentile(tile, [1, 99])
    return np.clip((tile - lo) / max(hi - lo, 1e-12), 0, 1)


def _outlines(instances: np.ndarray) -> np.ndarray:
    """RGBA: each instance's boundary (two pixels wide) in its own bright, seeded colour."""
    ids, inverse = np.unique(instances, return_inverse=True)
    hues = np.random.default_rng(0).uniform(0.0, 1.0, len(ids))
    colours = np.ones((len(ids), 4))
    colours[:, :3] = hsv_to_rgb(np.stack([hues, np.ones_like(hues), np.ones_like(hues)], axis=-1))
    owner = inverse.reshape(instances.shape)
    out = colours[owner]
    edge = find_boundaries(instances, mode="thick")
    edge[instances == 0] = False  # each object's own pixels along its edge, not the background's
    out[~edge] = 0.0
    return out


@dataclass(frozen=True)
class _Style:
    limits: tuple[float, float]
    style: str
    alpha: float
    instances: bool
    label: int | None


def _draw(ax: Axes, panel: Panel, s: _Style) -> None:
    ext = panel.extent
    shape = next(a.shape[:2] for a in (panel.grey, panel.labels, panel.prediction) if a is not None)
    if panel.grey is None:
        ax.imshow(np.zeros(shape), cmap="gray", vmin=0, vmax=1, extent=ext, interpolation="nearest")
    elif panel.grey.ndim == 3:
        ax.imshow(_rgb(panel.grey), extent=ext, interpolation="nearest")
    else:
        ax.imshow(panel.grey, cmap="gray", vmin=s.limits[0], vmax=s.limits[1], extent=ext, interpolation="nearest")
    if panel.prediction is not None and panel.labels is not None:
        codes = comparison_codes(panel.labels, panel.prediction, s.label)
        lut = np.zeros((5, 4))
        for code, (_, colour) in COMPARE.items():
            lut[code] = (*to_rgba(colour)[:3], max(s.alpha, 0.6))
        ax.imshow(lut[codes], extent=ext, interpolation="nearest")
    elif (lab := panel.labels if panel.labels is not None else panel.prediction) is not None:
        if s.instances:
            ax.imshow(_outlines(lab), extent=ext, interpolation="nearest")
        elif s.style == "fill":
            ax.imshow(
                label_rgba(lab, s.alpha, None if s.label is None else [s.label]), extent=ext, interpolation="nearest"
            )
        else:
            _contours(ax, panel, lab, s.label)
    ax.set_xlim(ext[0], ext[1])
    ax.set_ylim(ext[2], ext[3])
    ax.set_title(panel.title, fontsize=8)
    ax.set_xlabel(panel.xlabel, fontsize=7)
    ax.set_ylabel(panel.ylabel, fontsize=7)
    ax.tick_params(labelsize=6)
    for (x, y), letter in zip(((0.02, 0.5), (0.98, 0.5), (0.5, 0.97), (0.5, 0.03)), panel.sides, strict=False):
        ax.text(x, y, letter, transform=ax.transAxes, color="yellow", fontsize=7, ha="center", va="center")


def _contours(ax: Axes, panel: Panel, lab: np.ndarray, only: int | None) -> None:
    rows, cols = lab.shape
    left, right, bottom, top = panel.extent
    dx, dy = (right - left) / cols, (top - bottom) / rows
    x = left + dx * (np.arange(cols) + 0.5)
    y = top - dy * (np.arange(rows) + 0.5)  # row 0 is at the top
    for value in np.unique(lab):
        if value == 0 or (only is not None and value != only):
            continue
        ax.contour(x, y, (lab == value).astype(float), levels=[0.5], colors=[label_colour(int(value))], linewidths=1.0)


def _legend(vol: Volume, s: _Style) -> list[Patch]:
    t, p = vol.views["labels"], vol.views["prediction"]
    if t is not None and p is not None:
        codes = comparison_codes(t, p, s.label)
        counts = comparison_counts(codes)
        scale = unit_scale(vol.unit) ** vol.grid.ndim
        size, unit = vol.grid.voxel_volume_mm3 * scale, f"{vol.unit}²"
        if vol.grid.ndim == 3:
            size, unit = size / 1000.0, "mL"
        handles = [
            Patch(
                color=COMPARE[code][1],
                label=f"{name} {counts[name]} px"
                if vol.unit == "px"
                else f"{name} {counts[name]} ({counts[name] * size:.6g} {unit})",
            )
            for code, name in ((1, "TP"), (2, "FP"), (3, "FN"))
        ]
        if (codes == 4).any():
            handles.append(Patch(color=COMPARE[4][1], label="wrong label (FP and FN)"))
        return handles
    lab = t if t is not None else p
    if lab is None:
        return []
    values = [int(v) for v in np.unique(lab) if v and (s.label is None or v == s.label)]
    if s.instances:
        return [Patch(facecolor="none", edgecolor="black", label=f"{len(values)} objects")]
    return [Patch(color=label_colour(v), label=f"{v} {vol.label_names.get(v, '')}".strip()) for v in values[:20]]


def show(
    image: Image | None,
    labels: Image | None = None,
    prediction: Image | None = None,
    *,
    at: Sequence[float] | None = None,
    structure: int | str | None = None,
    planes: str | Sequence[str] = PLANES,
    window: str | tuple[float, float] | None = None,
    style: Literal["contour", "fill"] = "contour",
    alpha: float = 0.4,
    instances: bool = False,
    montage: int | None = None,
    ax: Axes | None = None,
    title: str = "",
    figsize: tuple[float, float] | None = None,
    legend: bool = True,
) -> Figure:
    """Draw an image with its label maps: orthogonal planes, a montage, or one 2D picture.

    Parameters
    ----------
    image : Image or None
        CT, MR, radiograph, grey or RGB microscopy tile; a label map alone
        (or None with ``labels``) is drawn on black.
    labels : Image, optional
        Label map (the reference, when ``prediction`` is given).
    prediction : Image, optional
        With ``labels``: comparison mode, each voxel coloured true positive,
        false positive or false negative (:data:`COMPARE`), counted in the legend.
    at : sequence of float, optional
        World point (LPS mm) the planes pass through.
    structure : int or str, optional
        Label value or name: planes through its centre, and only it is drawn
        (and compared).
    planes : str or sequence of str
        Any of ``"axial"``, ``"coronal"``, ``"sagittal"`` (3D).
    window : str or (float, float), optional
        A preset of :data:`WINDOWS` or ``(level, width)``; default soft tissue
        for CT, the 1st-99th percentiles otherwise.
    style : {"contour", "fill"}
        Label outlines, or filled at opacity ``alpha``.
    alpha : float
        Opacity of filled labels and comparison colours, 0-1.
    instances : bool
        ``labels`` is an instance map: every object outlined in its own colour.
    montage : int, optional
        That many slices of the first plane, evenly spread over the
        structure (or all labels, or the volume), in a grid.
    ax : matplotlib Axes, optional
        Draw the single view (the 2D image, or the first plane) into it.
    title : str
        Figure title.
    figsize : (float, float), optional
        Inches; chosen from the panels by default.
    legend : bool
        Name the labels (or count the comparison) beside the last panel.

    Returns
    -------
    matplotlib.figure.Figure
        ``ax.figure`` when ``ax`` is given.
    """
    if image is not None and isinstance(image, LabelMap) and labels is None:
        image, labels = None, image
    vol = Volume(image, labels, prediction)
    names = [planes] if isinstance(planes, str) else list(planes)
    unknown = [p for p in names if p not in PLANES]
    if unknown or not names:
        raise ValueError(f"planes must be among {', '.join(PLANES)}, got {planes!r}")
    label = None if structure is None else vol.label_value(structure)
    centre = vol.view_index_of(at) if at is not None else vol.centre(structure)
    views = _views(vol, names, centre, montage, label)
    grey = vol.views["image"]
    s = _Style(
        window_limits(image, grey if grey is not None and grey.ndim == vol.grid.ndim else None, window),
        style,
        alpha,
        instances,
        label,
    )
    if ax is not None:
        fig = ax.figure
        axes = [ax]
        views = views[:1]
    else:
        ncols = math.ceil(math.sqrt(len(views))) if montage else len(views)
        nrows = math.ceil(len(views) / ncols)
        fig = Figure(figsize=figsize or _figsize(views, ncols, nrows, legend), layout="constrained")
        axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(len(views))]
    for a, panel in zip(axes, views, strict=True):
        _draw(a, panel, s)
    handles = _legend(vol, s) if legend else []
    if handles:
        axes[-1].legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False, borderaxespad=0.0
        )
    if title:
        fig.suptitle(title, fontsize=9)
    return fig  # type: ignore[return-value]


def _figsize(views: list[Panel], ncols: int, nrows: int, legend: bool) -> tuple[float, float]:
    """Inches fitting the panels' mean aspect: 5.5 wide for one panel, 3.4 each for several, at most 14."""
    width = 5.5 if len(views) == 1 else 3.4
    aspect = float(np.mean([abs(p.extent[3] - p.extent[2]) / abs(p.extent[1] - p.extent[0]) for p in views]))
    height = width * min(max(aspect, 0.25), 2.0) + 0.6
    return min(width * ncols + (1.8 if legend else 0.0), 14.0), height * nrows


def _views(
    vol: Volume, names: list[str], centre: tuple[int, ...], montage: int | None, label: int | None
) -> list[Panel]:
    if vol.grid.ndim == 2:
        return [vol.panel("", 0)]
    if not montage:
        return [vol.panel(p, centre[_FIXED_AXIS[p]]) for p in names]
    fixed = _FIXED_AXIS[names[0]]
    lab = vol.views["labels"] if vol.views["labels"] is not None else vol.views["prediction"]
    span = np.arange(vol.shape[fixed])
    if lab is not None:
        mask = lab == label if label is not None else lab > 0
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != fixed)))
        span = hit if hit.size else span
    picks = np.unique(np.linspace(span[0], span[-1], montage).round().astype(int))
    return [vol.panel(names[0], int(k)) for k in picks]
