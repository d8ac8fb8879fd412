"""``medseg.viewer``: an ipywidgets slice viewer whose picture is a pure function of its state.

:func:`render` turns a :class:`ViewerState` (plane, slice, level and width,
overlay opacity, hidden labels) into RGB pixels; the widgets only edit the
state and show the result, so the rendering is tested headlessly by changing
widget values. The cursor readout (world position, value, label under the
mouse) comes from ``ipyevents`` mouse events. Where no widget frontend shows
it (a code host's notebook preview, nbconvert), the output carries the
current picture as PNG too; without ipywidgets, or outside a kernel,
:func:`viewer` returns a static :func:`~medseg.report.show.show` figure.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medseg.io.image import Image
from medseg.report.show import PLANES, Volume, label_rgba, show, window_limits


@dataclass(frozen=True)
class ViewerState:
    """What the viewer shows.

    Attributes
    ----------
    plane : str
        ``"axial"``, ``"coronal"`` or ``"sagittal"`` (ignored in 2D).
    index : int
        Slice along the plane's fixed L/P/S axis (view order).
    level, width : float
        Display window, in the image's unit (HU for CT).
    opacity : float
        Label overlay opacity, 0-1.
    hidden : frozenset of int
        Label values not drawn.
    """

    plane: str
    index: int
    level: float
    width: float
    opacity: float = 0.4
    hidden: frozenset[int] = field(default_factory=frozenset)


def initial_state(volume: Volume, plane: str = "axial") -> ViewerState:
    """Planes through the centre of the labels (or the image), the default window of :func:`window_limits`."""
    grey = volume.views["image"]
    values = grey if grey is not None and grey.ndim == volume.grid.ndim else None
    lo, hi = window_limits(volume.image, values, None)
    fixed = volume.layout(plane)[2]
    return ViewerState(plane, 0 if fixed is None else volume.centre()[fixed], (lo + hi) / 2, hi - lo)


def _resize_index(n: int, size: int) -> np.ndarray:
    """Source index of each of ``size`` output pixels spread over ``n`` input pixels (nearest)."""
    return np.minimum((np.arange(size) + 0.5) * n / size, n - 1).astype(int)


def render(volume: Volume, state: ViewerState, size: int = 512) -> np.ndarray:
    """RGB ``(rows, cols, 3)`` uint8 picture of ``state``: the windowed slice with the visible labels blended in.

    Pixels are resized (nearest) to square millimetres, the longer side ``size`` pixels.
    """
    panel = volume.panel(state.plane, state.index)
    grey = panel.grey
    if grey is None:
        rgb = np.zeros((*next(a for a in (panel.labels, panel.prediction) if a is not None).shape, 3))
    elif grey.ndim == 3:  # RGB tile
        rgb = grey / 255.0 if grey.dtype == np.uint8 else (grey - grey.min()) / max(float(np.ptp(grey)), 1e-12)
    else:
        lo = state.level - state.width / 2
        rgb = np.repeat(np.clip((grey - lo) / max(state.width, 1e-12), 0, 1)[..., None], 3, axis=-1)
    if panel.labels is not None:
        visible = [int(v) for v in np.unique(panel.labels) if v and int(v) not in state.hidden]
        overlay = label_rgba(panel.labels, state.opacity, visible)
        rgb = rgb * (1 - overlay[..., 3:]) + overlay[..., :3] * overlay[..., 3:]
    rows, cols = rgb.shape[:2]
    left, right, bottom, top = panel.extent
    height_mm, width_mm = abs(top - bottom), abs(right - left)
    scale = size / max(height_mm, width_mm)
    out_rows, out_cols = max(1, round(height_mm * scale)), max(1, round(width_mm * scale))
    picture = rgb[_resize_index(rows, out_rows)][:, _resize_index(cols, out_cols)]
    return np.round(picture * 255).astype(np.uint8)


def voxel_at(volume: Volume, state: ViewerState, picture_shape: tuple[int, ...], x: float, y: float) -> tuple[int, ...]:
    """Stored array index of the voxel under picture pixel ``(x, y)`` (column, row) of :func:`render`."""
    h, v, _, _ = volume.layout(state.plane)
    rows, cols = volume.shape[v], volume.shape[h]
    row = min(int(y * rows / picture_shape[0]), rows - 1)
    col = min(int(x * cols / picture_shape[1]), cols - 1)
    return volume.array_index(volume.view_index_at(state.plane, state.index, row, col))


def png(picture: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 picture."""
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(picture).save(buf, format="PNG")
    return buf.getvalue()


class Viewer:
    """The widget: plane, slice, level, width and opacity controls, a toggle per label, the picture, a readout.

    ``controls`` maps ``plane``, ``slice``, ``level``, ``width``, ``opacity``
    and ``label <value>`` to their widgets; :attr:`picture` is the last
    rendering (RGB uint8) and :attr:`widget` the box to display.
    """

    def __init__(self, image: Image | None, labels: Image | None = None, *, plane: str = "axial", size: int = 512):
        import ipywidgets as w

        self.volume = Volume(image, labels)
        self.size = size
        start = initial_state(self.volume, plane)
        grey = self.volume.views["image"]
        lo, hi = (float(grey.min()), float(grey.max())) if grey is not None and grey.size else (0.0, 1.0)
        span = max(hi - lo, 1e-6)
        self.controls: dict[str, Any] = {
            "plane": w.ToggleButtons(options=list(PLANES), value=plane, description="plane"),
            "slice": w.IntSlider(value=start.index, min=0, max=self._slices(plane) - 1, description="slice"),
            "level": w.FloatSlider(
                value=start.level,
                min=min(lo, start.level),
                max=max(hi, start.level),
                step=span / 200,
                description="level",
            ),
            "width": w.FloatSlider(
                value=start.width, min=span / 200, max=max(2 * span, start.width), step=span / 200, description="width"
            ),
            "opacity": w.FloatSlider(value=start.opacity, min=0.0, max=1.0, step=0.05, description="opacity"),
        }
        names = self.volume.label_names
        lab = self.volume.views["labels"]
        for v in [] if lab is None else [int(v) for v in np.unique(lab) if v]:
            self.controls[f"label {v}"] = w.Checkbox(
                value=True, description=f"{v} {names.get(v, '')}".strip(), indent=False
            )
        self.image_widget = w.Image(format="png")
        self.readout = w.HTML("move the cursor over the image")
        toggles = [c for k, c in self.controls.items() if k.startswith("label ")]
        sliders = [self.controls[k] for k in ("slice", "level", "width", "opacity")]
        top = ([self.controls["plane"]] if self.volume.grid.ndim == 3 else []) + sliders
        side = w.VBox(toggles, layout=w.Layout(max_height=f"{size}px", overflow="auto"))
        self.widget = w.VBox([*top, w.HBox([self.image_widget, side]), self.readout])
        if self.volume.grid.ndim == 2:
            self.controls["slice"].layout.display = "none"
        for control in self.controls.values():
            control.observe(self._changed, names="value")
        self._listen_to_mouse()
        self.picture = np.zeros((1, 1, 3), np.uint8)
        self.refresh()

    def _slices(self, plane: str) -> int:
        fixed = self.volume.layout(plane)[2]
        return 1 if fixed is None else self.volume.shape[fixed]

    def _listen_to_mouse(self) -> None:
        try:
            from ipyevents import Event
        except ImportError:  # the readout needs ipyevents; the rest of the viewer works without it
            return
        self._events = Event(source=self.image_widget, watched_events=["mousemove"])
        self._events.on_dom_event(self.on_mouse)

    @property
    def state(self) -> ViewerState:
        """The state the controls describe."""
        c = self.controls
        hidden = frozenset(int(k.split()[1]) for k, box in c.items() if k.startswith("label ") and not box.value)
        return ViewerState(
            c["plane"].value,
            int(c["slice"].value),
            float(c["level"].value),
            float(c["width"].value),
            float(c["opacity"].value),
            hidden,
        )

    def _changed(self, change: dict[str, Any]) -> None:
        if change["owner"] is self.controls["plane"]:  # a new plane starts through the centre again
            slider = self.controls["slice"]
            with slider.hold_trait_notifications():
                slider.max = self._slices(change["new"]) - 1
                slider.value = initial_state(self.volume, change["new"]).index
        self.refresh()

    def refresh(self) -> None:
        """Render the current state into the picture."""
        self.picture = render(self.volume, self.state, self.size)
        self.image_widget.value = png(self.picture)

    def readout_at(self, x: float, y: float) -> str:
        """Text for picture pixel ``(x, y)``: the world position (mm), the value and the label there."""
        index = voxel_at(self.volume, self.state, self.picture.shape, x, y)
        grid = self.volume.grid
        world = grid.index_to_world(np.array(index, float))
        unit = "mm" if grid.spacing_known else "px"
        parts = [f"index {index}", "(" + ", ".join(f"{c:.1f}" for c in world) + f") {unit}"]
        if self.volume.image is not None:
            value = self.volume.image.array[index]
            parts.append(f"value {np.round(value, 3)} {self.volume.image.intensity_unit}".rstrip())
        if self.volume.labels is not None:
            label = int(self.volume.labels.array[index])
            parts.append(f"label {label} {self.volume.label_names.get(label, '')}".rstrip())
        return " | ".join(parts)

    def on_mouse(self, event: dict[str, Any]) -> None:
        """ipyevents mousemove handler: position relative to the displayed picture -> readout."""
        x = event["relativeX"] * self.picture.shape[1] / max(event["boundingRectWidth"], 1)
        y = event["relativeY"] * self.picture.shape[0] / max(event["boundingRectHeight"], 1)
        if 0 <= x < self.picture.shape[1] and 0 <= y < self.picture.shape[0]:
            self.readout.value = self.readout_at(x, y)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["image/png"] = base64.b64encode(png(self.picture)).decode("ascii")
        bundle["text/plain"] = f"medseg viewer ({self.state.plane}, slice {self.state.index})"
        return bundle


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def viewer(image: Image | None, labels: Image | None = None, **options: Any) -> Viewer | Any:
    """An interactive slice viewer of ``image`` and ``labels`` in a notebook (see :class:`Viewer`).

    Outside a Jupyter kernel, or without ipywidgets installed, returns the
    static :func:`~medseg.report.show.show` figure of the same planes instead.
    ``options``: ``plane`` and ``size`` (pixels of the picture's longer side).
    """
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return show(image, labels)
    if not _in_kernel():
        return show(image, labels)
    return Viewer(image, labels, **options)


__all__ = ["Viewer", "ViewerState", "initial_state", "png", "render", "viewer", "voxel_at"]
