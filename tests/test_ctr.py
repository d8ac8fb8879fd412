"""Chest radiographs: lung and heart areas and the cardiothoracic ratio from masks, radiograph inputs, the CLI."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import medseg
from medseg.chest import ROW_COLUMNS, chest_measurements
from medseg.cli import main
from medseg.errors import LabelError
from medseg.io.image import Image, LabelMap
from medseg.segmenters import base as segmenters
from medseg.workflows.chest import ctr_table

REPO = Path(__file__).resolve().parents[1]
JSRT_CASES = ("JPCLN001", "JPCNN001", "JPCNN005")


def _chest(
    shape: tuple[int, int] = (100, 80), spacing: tuple[float, float] = (0.5, 0.7), known: bool = True
) -> LabelMap:
    """Right lung columns 10-39 (rows 10-59), left lung 55-89 (rows 12-64), heart 30-64 (rows 40-59)."""
    arr = np.zeros(shape, np.uint8)
    arr[10:40, 10:60] = 1
    arr[55:90, 12:65] = 2
    arr[30:65, 40:60] = 3
    return LabelMap(
        arr, spacing=spacing, spacing_known=known, label_names={1: "right lung", 2: "left lung", 3: "heart"}
    )


def test_areas_widths_and_ratio_of_known_masks() -> None:
    row = chest_measurements(_chest()).row()
    assert list(row) == list(ROW_COLUMNS)
    masks = _chest().array
    for value, name in ((1, "right_lung"), (2, "left_lung"), (3, "heart")):
        assert row[f"{name}_area_cm2"] == pytest.approx((masks == value).sum() * 0.5 * 0.7 / 100)
    assert (row["heart_width_px"], row["thoracic_width_px"]) == (35, 80)  # columns 30-64; 10-89 on rows 12-59
    assert row["heart_width_mm"] == pytest.approx(35 * 0.5) and row["thoracic_width_mm"] == pytest.approx(80 * 0.5)
    assert row["ctr"] == pytest.approx(35 / 80) and 12 <= row["thoracic_row"] <= 59
    assert row["spacing_known"] and not row["lung_cut_by_edge"] and not row["implausible"] and row["flags"] == ""


def test_unknown_pixel_size_keeps_pixels_and_the_ratio() -> None:
    row = chest_measurements(_chest(known=False)).row()
    assert not row["spacing_known"] and math.isnan(row["heart_width_mm"]) and math.isnan(row["heart_area_cm2"])
    assert row["ctr"] == pytest.approx(35 / 80) and row["thoracic_width_px"] == 80


def _lung_at_edge(a: np.ndarray) -> None:
    a[0:10, 10:60] = 1


def _no_heart(a: np.ndarray) -> None:
    a[a == 3] = 0


def _heart_below_lungs(a: np.ndarray) -> None:
    a[a == 3] = 0
    a[40:60, 68:79] = 3


def _swapped(a: np.ndarray) -> None:
    a[:] = np.choose(a, [0, 2, 1, 3])


def _heart_wider_than_thorax(a: np.ndarray) -> None:
    """Both lungs share rows 30-59 only, where they span columns 30-70; the heart spans 20-80 within 10-89."""
    a[:] = 0
    a[10:40, 10:30] = 1
    a[30:40, 30:60] = 1
    a[55:71, 30:65] = 2
    a[55:90, 60:65] = 2
    a[20:81, 40:50] = 3


@pytest.mark.parametrize(
    ("edit", "flag"),
    [
        (_lung_at_edge, "right lung cut by the image edge"),
        (_no_heart, "no heart in the mask"),
        (_heart_below_lungs, "heart outside the lungs' span"),
        (_swapped, "right lung on the patient's left (laterality swapped?)"),
        (_heart_wider_than_thorax, "heart wider than the thorax"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[1:],
)
def test_doubtful_masks_are_flagged(edit, flag: str) -> None:
    labels = _chest()
    edit(labels.array)
    row = chest_measurements(labels).row()
    assert row["flags"].split("; ") == [flag]
    cut = edit is _lung_at_edge
    assert row["lung_cut_by_edge"] == cut and row["implausible"] == (not cut)


def test_labels_are_found_by_name_and_named_maps_must_name_all_three() -> None:
    arr = np.choose(_chest().array, [0, 7, 8, 9]).astype(np.uint8)
    named = LabelMap(arr, label_names={7: "Right-Lung", 8: "left_lung", 9: "Heart"})
    assert chest_measurements(named).ctr == pytest.approx(35 / 80)
    assert chest_measurements(Image(_chest().array)).ctr == pytest.approx(35 / 80)  # unnamed: 1, 2, 3
    with pytest.raises(LabelError, match="lack heart"):
        chest_measurements(LabelMap(arr, label_names={7: "right lung", 8: "left lung"}))
    with pytest.raises(LabelError, match="2D"):
        chest_measurements(LabelMap(np.zeros((4, 4, 4), np.uint8)))


def test_shipped_workflow_is_planned_and_keeps_laterality() -> None:
    """configs/xray_chest.yaml is a task: planned for radiographs, it mirrors and turns nothing (sided labels)."""
    from medseg.config import validate_config
    from medseg.plan import plan_workflow, read_workflow
    from tests.test_plan import FAST_CPU, _fingerprint

    task, complete = read_workflow(REPO / "configs" / "xray_chest.yaml")
    assert not complete and {"patch_size", "network", "spacing_mm", "train", "augment", "inference"}.isdisjoint(task)
    rng = np.random.default_rng(3)
    films = [Image(rng.normal(size=(100, 80)).astype(np.float32), spacing=(0.5, 0.7), modality="DX") for _ in range(2)]
    cfg = validate_config(plan_workflow(_fingerprint(films, [_chest().array] * 2), task, minutes=5,
                                        throughput=FAST_CPU).config)
    assert cfg.dims == 2 and cfg.labels == {"background": 0, "right_lung": 1, "left_lung": 2, "heart": 3}
    assert cfg.augment.flip_axes == [] and not cfg.augment.rotate90 and not cfg.inference.tta
    assert cfg.postprocess["heart"] == {"keep_largest": True, "fill_holes": True}


# ---- real radiographs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jsrt(shared_data: Path) -> Path:
    return shared_data / "xray_jsrt"


def test_jsrt_pngs_carry_their_pixel_size_and_give_plausible_ratios(jsrt: Path) -> None:
    for case in JSRT_CASES:
        image = medseg.load(jsrt / "images" / f"{case}.png")
        assert image.spacing == (0.35, 0.35) and image.spacing_known and image.meta["spacing_source"] == "png_phys"
        labels = medseg.load(jsrt / "labels" / f"{case}.png")  # no pHYs: takes the radiograph's pixel size
        row = chest_measurements(labels, image).row()
        assert row["spacing_known"] and row["flags"] == ""
        assert 0.3 < row["ctr"] < 0.6 and 220 < row["thoracic_width_mm"] < 330
        assert 80 < row["right_lung_area_cm2"] < 350 and 60 < row["heart_area_cm2"] < 200


def _write_dx(png: Path, path: Path, *, monochrome1: bool) -> np.ndarray:
    """A DX DICOM of the radiograph (ImagerPixelSpacing 0.35 mm), MONOCHROME1 stored inverted."""
    pixels = np.asarray(PILImage.open(png)).astype(np.uint16)  # rows, columns
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.ImagerPixelSpacing = [0.35, 0.35]
    stored = 4095 - pixels * 16 if monochrome1 else pixels * 16
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return pixels.T * 16  # [column, row], bright = dense


class _ReferenceMasks:
    """A Segmenter that returns the JSRT reference label map of each radiograph (found by file name)."""

    name, spatial_dims, in_channels, postprocess = "jsrt reference", 2, 1, None

    def __init__(self, labels_dir: Path) -> None:
        self.label_names = {1: "right_lung", 2: "left_lung", 3: "heart"}
        self.labels_dir = labels_dir
        self.seen: dict[str, Image] = {}

    def fingerprint(self) -> str:
        return "jsrt-reference"

    def segment(self, image: Image) -> LabelMap:
        stem = Path(image.source or "").name.split(".")[0]
        self.seen[stem] = image
        mask = medseg.load(self.labels_dir / f"{stem}.png").array
        return image.with_labels(mask, dict(self.label_names))


def test_dicom_png_and_jpeg_radiographs_to_one_table(jsrt: Path, tmp_path: Path) -> None:
    folder = tmp_path / "films"
    folder.mkdir()
    expected = {
        c: _write_dx(jsrt / "images" / f"{c}.png", folder / f"{c}.dcm", monochrome1=c == "JPCLN001")
        for c in JSRT_CASES[:2]
    }
    (folder / JSRT_CASES[2]).with_suffix(".png").write_bytes((jsrt / "images" / f"{JSRT_CASES[2]}.png").read_bytes())
    PILImage.open(jsrt / "images" / "JPCNN007.png").save(folder / "JPCNN007.jpg", quality=95)  # JFIF without size
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("not a radiograph")
    segmenter = _ReferenceMasks(jsrt / "labels")
    table = ctr_table(segmenter, [folder], labels_out=tmp_path / "labels")
    assert [Path(f).name for f in table["file"]] == [
        "JPCLN001.dcm",
        "JPCNN001.dcm",
        "JPCNN005.png",
        "JPCNN007.jpg",
        "broken.png",
    ]
    for case, pixels in expected.items():  # MONOCHROME1 inverted back: bright = dense
        assert segmenter.seen[case].modality == "DX" and np.array_equal(segmenter.seen[case].array, pixels)
    ok = table[table["error"] == ""]
    ok = ok.set_index(ok["file"].map(lambda f: Path(f).stem))
    assert ok.loc[["JPCLN001", "JPCNN001", "JPCNN005"], "spacing_known"].all()
    assert not ok.loc["JPCNN007", "spacing_known"] and math.isnan(ok.loc["JPCNN007", "heart_area_cm2"])
    reference = {
        c: chest_measurements(
            medseg.load(jsrt / "labels" / f"{c}.png"), medseg.load(jsrt / "images" / f"{c}.png")
        ).row()
        for c in JSRT_CASES
    }
    for case in JSRT_CASES:  # DICOM (ImagerPixelSpacing) and PNG (pHYs) give the same numbers
        assert ok.loc[case, "heart_area_cm2"] == pytest.approx(reference[case]["heart_area_cm2"])
        assert ok.loc[case, "ctr"] == pytest.approx(reference[case]["ctr"])
    assert "broken.png" in table.loc[table["file"].str.endswith("broken.png"), "error"].item()
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == [
        "JPCLN001.nii.gz",
        "JPCNN001.nii.gz",
        "JPCNN005.png",
        "JPCNN007.png",
    ]


def _cli(monkeypatch: pytest.MonkeyPatch, *args: object) -> int:
    monkeypatch.setattr(sys, "argv", ["medseg", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_measure_chest_and_ctr(jsrt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels, images = tmp_path / "labels", tmp_path / "images"
    labels.mkdir()
    images.mkdir()
    for case in JSRT_CASES:
        (labels / f"{case}.png").write_bytes((jsrt / "labels" / f"{case}.png").read_bytes())
        (images / f"{case}.png").write_bytes((jsrt / "images" / f"{case}.png").read_bytes())
    assert _cli(monkeypatch, "measure", labels, "--image", images, "--chest", "--out", tmp_path / "masks.csv") == 0
    masks = pd.read_csv(tmp_path / "masks.csv")
    assert list(masks.columns) == ["file", *ROW_COLUMNS] and len(masks) == len(JSRT_CASES)
    assert masks["spacing_known"].all() and masks["ctr"].between(0.3, 0.6).all()
    assert _cli(monkeypatch, "measure", labels, "--chest", "--instances", "--out", tmp_path / "x.csv") == 2

    kind = segmenters.SegmenterKind("jsrt reference", lambda spec, **_: _ReferenceMasks(Path(spec)), scheme="jsrtref")
    monkeypatch.setattr(segmenters, "_registered", [kind])
    assert _cli(monkeypatch, "ctr", f"jsrtref:{jsrt / 'labels'}", images, "--out", tmp_path / "ctr.csv") == 0
    films = pd.read_csv(tmp_path / "ctr.csv", keep_default_na=False)
    assert films["ctr"].astype(float).round(6).tolist() == masks["ctr"].round(6).tolist()
    assert (films["error"] == "").all()
