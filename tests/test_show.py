"""``medseg.show`` and the notebook cards: overlays on exactly the label's pixels, world-space alignment,
aspect from the spacing, comparison counts, windows, montages, RGB tiles, instance outlines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import medseg
from medseg.io.image import Image, LabelMap
from medseg.report.display import header, style_table
from medseg.report.show import COMPARE, WINDOWS, label_colour, show

RNG = np.random.default_rng(5)


def _picture() -> tuple[Image, LabelMap]:
    img = Image(RNG.normal(100, 10, (40, 30)).astype(np.float32), spacing=(0.5, 0.5))
    lab = np.zeros((40, 30), np.uint8)
    lab[5:15, 4:20] = 1
    lab[22:35, 10:12] = 2
    return img, img.with_labels(lab, {1: "cyst", 2: "vessel"})


def _canvas_rgb(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]


def _screen_pixel(fig: Figure, ax, x_mm: float, y_mm: float) -> tuple[int, int]:
    x, y = ax.transData.transform((x_mm, y_mm))
    return int(fig.bbox.height - y), int(x)  # row, column of the canvas


def test_filled_overlay_colours_exactly_the_label_pixels() -> None:
    img, lab = _picture()
    fig = show(img, lab, style="fill", alpha=1.0)
    ax = fig.axes[0]
    overlay = np.asarray(ax.images[1].get_array())  # rows = j, columns = i
    for value in (0, 1, 2):
        where = value == lab.array.T
        expected = (0, 0, 0, 0) if value == 0 else label_colour(value)
        assert np.allclose(overlay[where], expected) and not np.allclose(overlay[~where], expected)
    rgb = _canvas_rgb(fig)  # and on screen: the pixel centre of voxel (i, j) shows its label's colour
    for i, j, value in ((9, 10, 1), (28, 10, 2)):
        row, col = _screen_pixel(fig, ax, i * 0.5, j * 0.5)
        assert np.abs(rgb[row, col] / 255 - label_colour(value)[:3]).max() < 0.02
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names == ["1 cyst", "2 vessel"]


def test_contours_are_drawn_around_each_label_in_its_colour() -> None:
    img, lab = _picture()
    ax = show(img, lab).axes[0]
    colours = [tuple(np.round(c.get_edgecolor()[0], 3)) for c in ax.collections]
    assert colours == [tuple(np.round(label_colour(v), 3)) for v in (1, 2)]


def test_views_have_the_aspect_of_the_spacing_and_ticks_in_world_mm() -> None:
    vol = Image(RNG.normal(0, 1, (40, 30, 10)), spacing=(0.5, 0.8, 3.0), origin=(10.0, -20.0, 100.0))
    fig = show(vol)
    FigureCanvasAgg(fig).draw()
    for ax, (width_mm, height_mm) in zip(fig.axes, [(20.0, 24.0), (20.0, 30.0), (24.0, 30.0)], strict=True):
        box = ax.images[0].get_window_extent()
        assert box.width / box.height == pytest.approx(width_mm / height_mm, rel=0.02)
    coronal = fig.axes[1]
    assert coronal.get_xlim() == pytest.approx((10 - 0.25, 10 + 19.75))  # voxel edges in world x
    assert coronal.get_ylim() == pytest.approx((100 - 1.5, 100 + 28.5))  # superior up


def _flipped(labels: LabelMap) -> LabelMap:
    """The same label map stored with its first axis reversed (as many NIfTI writers do): same world voxels."""
    origin = labels.index_to_world(np.array([labels.shape[0] - 1, 0, 0]))
    direction = labels.direction.copy()
    direction[:, 0] *= -1
    return LabelMap(
        labels.array[::-1].copy(),
        spacing=labels.spacing,
        origin=tuple(origin),
        direction=direction,
        label_names=labels.label_names,
    )


def test_label_map_with_flipped_voxel_order_lines_up_in_world_space() -> None:
    ct = Image(RNG.normal(0, 50, (24, 20, 6)).astype(np.float32), spacing=(0.8, 0.8, 2.5), intensity_unit="HU")
    lab = np.zeros(ct.shape, np.uint8)
    lab[3:9, 5:15, 1:5] = 1
    labels = ct.with_labels(lab, {1: "liver"})
    flipped = _flipped(labels)
    assert flipped.orientation == "RPS" and not np.array_equal(flipped.array, labels.array)
    for plane in ("axial", "coronal", "sagittal"):
        a = show(ct, labels, style="fill", planes=plane, structure="liver").axes[0].images[1].get_array()
        b = show(ct, flipped, style="fill", planes=plane, structure="liver").axes[0].images[1].get_array()
        assert np.array_equal(np.asarray(a), np.asarray(b)) and np.asarray(a)[..., 3].any()
    axial = show(ct, labels, style="fill", planes="axial").axes[0].images[1].get_array()
    assert np.asarray(axial)[..., 3].T.astype(bool).sum() == lab[:, :, 3].sum()  # the whole cross-section


def test_real_dicom_ct_and_its_flipped_nifti_labels_line_up(shared_data: Path) -> None:
    ct = medseg.load(shared_data / "ct_abdomen_dicom")
    names = {int(k): v for k, v in json.loads((shared_data / "reference_label_names.json").read_text()).items()}
    ref = medseg.load_labels(shared_data / "ct_abdomen_dicom_reference_labels.nii.gz", names)
    assert ref.orientation != ct.orientation  # stored in another voxel order
    ax = show(ct, ref, structure="liver", style="fill", planes="axial", alpha=1.0).axes[0]
    grey, overlay = np.asarray(ax.images[0].get_array()), np.asarray(ax.images[1].get_array())
    liver = overlay[..., 3] > 0
    assert liver.sum() > 5000 and 60 < np.median(grey[liver]) < 200  # enhanced liver parenchyma, HU
    assert np.median(grey[~liver & (grey > -200)]) < np.median(grey[liver])


def _legend_counts(fig: Figure) -> dict[str, int]:
    texts = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    return {m.group(1): int(m.group(2)) for t in texts if (m := re.match(r"(TP|FP|FN) (\d+) ", t))}


def test_comparison_counts_and_colours_equal_numpy() -> None:
    img = Image(RNG.normal(0, 1, (20, 18, 8)), spacing=(1.0, 1.0, 2.0))
    truth = RNG.integers(0, 3, img.shape).astype(np.uint8)
    pred = np.where(RNG.random(img.shape) < 0.3, RNG.integers(0, 3, img.shape), truth).astype(np.uint8)
    t, p = img.with_labels(truth, {1: "a", 2: "b"}), img.with_labels(pred)
    fig = show(img, t, p)
    assert _legend_counts(fig) == {
        "TP": int(((truth == pred) & (truth > 0)).sum()),
        "FP": int(((pred > 0) & (truth != pred)).sum()),
        "FN": int(((truth > 0) & (truth != pred)).sum()),
    }
    one = show(img, t, p, structure="b", planes="axial", alpha=1.0)
    tb, pb = truth == 2, pred == 2
    assert _legend_counts(one) == {"TP": int((tb & pb).sum()), "FP": int((pb & ~tb).sum()), "FN": int((tb & ~pb).sum())}
    k = int(np.argwhere(tb).mean(axis=0).round()[2])  # the plane through the structure's centre
    drawn = np.asarray(one.axes[0].images[1].get_array())[..., :3].transpose(1, 0, 2)  # back to [i, j]
    for mask, code in ((tb[..., k] & pb[..., k], 1), (pb[..., k] & ~tb[..., k], 2), (tb[..., k] & ~pb[..., k], 3)):
        colour = matplotlib.colors.to_rgb(COMPARE[code][1])
        assert np.allclose(drawn[mask], colour) and not np.allclose(drawn[~mask], colour)


def test_windows_montage_rgb_instances_and_a_given_axes() -> None:
    backend = matplotlib.get_backend()
    ct = Image(RNG.normal(0, 300, (16, 16, 12)).astype(np.float32), intensity_unit="HU")
    for window, limits in (("lung", (-1350.0, 150.0)), ((40, 400), (-160.0, 240.0)), (None, (-160.0, 240.0))):
        assert show(ct, window=window).axes[0].images[0].get_clim() == pytest.approx(limits)
    assert set(WINDOWS) == {"lung", "mediastinum", "bone", "brain", "soft_tissue"}
    with pytest.raises(ValueError, match="presets"):
        show(ct, window="liver")
    lab = np.zeros(ct.shape, np.uint8)
    lab[4:10, 4:10, 2:9] = 1
    montage = show(ct, ct.with_labels(lab), montage=4, planes="axial")
    titles = [a.get_title() for a in montage.axes]
    assert len(titles) == 4 and titles[0] == "axial z = 2.0 mm" and titles[-1] == "axial z = 8.0 mm"
    tile = Image(RNG.integers(0, 255, (30, 20, 3)).astype(np.uint8), spacing=(0.0005, 0.0005), channel_axis=True)
    nuclei = np.zeros((30, 20), np.uint16)
    nuclei[2:8, 2:8], nuclei[8:14, 2:8] = 1, 2  # touching instances
    fig = show(tile, tile.with_labels(nuclei), instances=True)
    ax = fig.axes[0]
    assert np.array_equal(np.asarray(ax.images[0].get_array()), tile.array.transpose(1, 0, 2))
    outline = np.asarray(ax.images[1].get_array())[..., 3].T > 0
    assert outline[2, 2] and outline[7, 7] and outline[8, 4] and not outline[4, 4] and not outline[20, 15]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["2 objects"]
    given = Figure().add_subplot()
    assert show(ct, planes="sagittal", ax=given) is given.figure and given.get_title().startswith("sagittal")
    assert matplotlib.get_backend() == backend


def test_notebook_cards_and_styled_tables() -> None:
    ct = Image(
        RNG.normal(0, 100, (10, 8, 4)).astype(np.int16), spacing=(0.7, 0.7, 2.5), modality="CT", intensity_unit="HU"
    )
    card = ct._repr_html_()
    for text in ("10 x 8 x 4", "0.7 x 0.7 x 2.5 mm", "LPS", "HU", "data:image/png;base64,"):
        assert text in card
    lab = np.zeros(ct.shape, np.uint8)
    lab[2:4, 2:4, 1:3] = 1
    labels_card = ct.with_labels(lab, {1: "liver"})._repr_html_()
    assert (
        "volume (mL)" in labels_card and "liver" in labels_card and f"{8 * 0.7 * 0.7 * 2.5 / 1000:.5g}" in labels_card
    )
    unknown = Image(np.zeros((6, 5), np.uint8), spacing_known=False)._repr_html_()
    assert "unknown (sizes in pixels)" in unknown
    table = pd.DataFrame({"label": [1, 2], "dice": [0.95, 0.2], "hd95_mm": [1.5, 9.0], "volume_ml": [12.0, 3.0]})
    html = style_table(table).to_html()
    assert "volume (mL)" in html and "hd95 (mm)" in html and "background-color" in html
    assert html == style_table(table.copy()).to_html()  # the same table gives the same HTML
    assert header("right_lung_area_cm2") == "right lung area (cm²)" and header("ctr") == "ctr"
