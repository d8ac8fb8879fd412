"""``medseg.viewer`` headlessly: change widget values, check the rendered pixels change as they should."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image as PILImage

from medseg.io.image import Image
from medseg.report.show import Volume, label_colour
from medseg.report.viewer import Viewer, render, viewer

pytest.importorskip("ipywidgets")

SPACING = (1.0, 1.0, 4.0)


@pytest.fixture
def volume() -> tuple[Image, Image]:
    """Axial slice k holds the value 10 k (HU); label 1 a box, label 2 a bar, both through slices 2-5."""
    arr = np.broadcast_to(np.arange(8, dtype=np.float32) * 10, (32, 24, 8)).copy()
    ct = Image(arr, spacing=SPACING, intensity_unit="HU")
    lab = np.zeros(ct.shape, np.uint8)
    lab[4:12, 4:12, 2:6] = 1
    lab[20:28, 16:18, 2:6] = 2
    return ct, ct.with_labels(lab, {1: "cyst", 2: "vessel"})


def _grey(v: Viewer) -> np.ndarray:
    """Picture pixels that show no label (the label-free corner)."""
    return v.picture[:3, -3:].reshape(-1, 3)


def _colour_share(v: Viewer, value: int) -> float:
    """Share of picture pixels tinted toward label ``value``'s colour."""
    colour = np.array(label_colour(value)[:3]) * 255
    grey = _grey(v)[0].astype(float)
    opacity = v.state.opacity
    expected = grey * (1 - opacity) + colour * opacity
    return float((np.abs(v.picture.astype(float) - expected).max(axis=-1) <= 1.5).mean())


def test_slice_level_width_opacity_and_label_toggles_change_the_pixels(volume: tuple[Image, Image]) -> None:
    v = Viewer(*volume, size=64)
    assert v.state.plane == "axial" and v.state.index == 4  # through the labels' centre (z 3.5 voxels)
    v.controls["level"].value, v.controls["width"].value = 40.0, 80.0  # grey = (value - 0) / 80
    assert np.all(_grey(v) == round(40 / 80 * 255))
    v.controls["slice"].value = 6
    assert np.all(_grey(v) == round(60 / 80 * 255))
    assert np.array_equal(v.picture, render(Volume(*volume), v.state, 64))  # the picture is the state's rendering
    v.controls["slice"].value = 3
    cyst, vessel = _colour_share(v, 1), _colour_share(v, 2)
    assert cyst == pytest.approx(64 / (32 * 24), abs=0.01) and vessel == pytest.approx(16 / (32 * 24), abs=0.01)
    v.controls["label 1"].value = False
    assert _colour_share(v, 1) == 0 and _colour_share(v, 2) == vessel and v.state.hidden == {1}
    before = v.picture.copy()
    v.controls["opacity"].value = 0.0
    assert np.all(v.picture == v.picture[..., :1]) and not np.array_equal(v.picture, before)  # grey only
    v.controls["width"].value = 20.0  # window 30-50 HU: slice 3 (30 HU) turns black
    assert np.all(_grey(v) == 0)
    v.controls["level"].value = 10.0  # window 0-20 HU: white
    assert np.all(_grey(v) == 255)


def test_planes_have_the_aspect_of_the_spacing_and_the_readout_names_the_voxel(volume: tuple[Image, Image]) -> None:
    v = Viewer(*volume, size=64)
    assert v.picture.shape[:2] == (48, 64)  # axial: 24 x 32 mm
    v.controls["plane"].value = "coronal"
    assert v.picture.shape[:2] == (64, 64) and v.controls["slice"].max == 23  # 32 mm wide, 8 x 4 mm high
    v.controls["plane"].value = "sagittal"
    assert v.picture.shape[:2] == (64, 48) and v.state.index == 11  # through the labels' centre (x 10.7 voxels)
    v.controls["plane"].value = "axial"
    v.controls["slice"].value = 4
    text = v.readout_at(8 * 2 + 1, 8 * 2 + 1)  # 2 picture pixels per mm: voxel (8, 8, 4)
    assert text.startswith("index (8, 8, 4)") and "value 40.0 HU" in text and "label 1 cyst" in text
    shown_at = {"boundingRectWidth": 128, "boundingRectHeight": 96}  # the picture drawn at twice its size
    v.on_mouse({"relativeX": 24.5 * 4, "relativeY": 16.5 * 4, **shown_at})
    assert v.readout.value.startswith("index (24, 16, 4)") and "label 2 vessel" in v.readout.value


def test_the_output_carries_a_static_picture_and_scripts_get_a_figure(volume: tuple[Image, Image]) -> None:
    v = Viewer(*volume, size=64)
    bundle = v._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    shown = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(bundle["image/png"]))))
    assert np.array_equal(shown[..., :3], v.picture)
    assert isinstance(viewer(*volume), Figure)  # no kernel here: the static figure
