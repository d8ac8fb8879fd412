"""RT Structure Sets in and out: the standard's rasterisation rule, real and hand-made files, round trips, bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_support.fixtures import require_dciodvfy
from matplotlib.path import Path as MplPath
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian

import medseg
from medseg.errors import GeometryError, LabelError, ReadError
from medseg.io import load_segments, save_rtstruct
from medseg.io.image import Image, LabelMap
from medseg.io.rtstruct import RTSTRUCT_STORAGE, load_rtstruct

pytestmark = pytest.mark.xdist_group("dicom_pacs")
Contour = tuple[str, list[tuple[float, float, float]]]


def centre_rule(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Independent reference: pixel centres inside an odd number of polygons (matplotlib's point test), ``[x, y]``."""
    xs, ys = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    centres = np.column_stack([xs.ravel(), ys.ravel()])
    inside = np.zeros(len(centres), bool)
    for polygon in polygons:
        inside ^= MplPath(polygon).contains_points(centres)
    return inside.reshape(shape)


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 x 64 x 3 CT series, 1 mm pixels, 2 mm slices, origin at (0, 0, 0): index (i, j, k) is at (i, j, 2k) mm."""
    folder = tmp_path_factory.mktemp("small_ct")
    medseg.save_dicom_series(Image(np.zeros((64, 64, 3), np.int16), spacing=(1.0, 1.0, 2.0), modality="CT"), folder,
                             seed="rtstruct-test")
    return folder


def hand_made(ct_dir: Path, rois: dict[int, list[Contour]], path: Path, *, frame: str | None = None,
              reference_images: bool = True) -> Path:
    """A minimal RT Structure Set over ``ct_dir`` with the given contours (patient mm) per ROI number."""
    ct = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(ct_dir.iterdir())]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[str(path)])
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.Modality, ds.StudyInstanceUID = "RTSTRUCT", ct[0].StudyInstanceUID
    ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[str(path), "series"])
    referenced = Dataset()
    referenced.FrameOfReferenceUID = frame or ct[0].FrameOfReferenceUID
    if reference_images:
        series = Dataset()
        series.SeriesInstanceUID = ct[0].SeriesInstanceUID
        series.ContourImageSequence = [Dataset() for _ in ct]
        for item, image in zip(series.ContourImageSequence, ct, strict=True):
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = image.SOPClassUID, image.SOPInstanceUID
        study = Dataset()
        study.RTReferencedSeriesSequence = [series]
        referenced.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [referenced]
    ds.StructureSetROISequence, ds.ROIContourSequence = [], []
    for number, contours in rois.items():
        roi = Dataset()
        roi.ROINumber, roi.ROIName = number, f"roi {number}"
        ds.StructureSetROISequence.append(roi)
        roi_contours = Dataset()
        roi_contours.ReferencedROINumber = number
        roi_contours.ContourSequence = []
        for kind, points in contours:
            contour = Dataset()
            contour.ContourGeometricType, contour.NumberOfContourPoints = kind, len(points)
            contour.ContourData = [f"{v:g}" for p in points for v in p]
            roi_contours.ContourSequence.append(contour)
        ds.ROIContourSequence.append(roi_contours)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def square(x0: float, y0: float, x1: float, y1: float, z: float) -> list[tuple[float, float, float]]:
    return [(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)]


def test_hand_made_structure_set_follows_the_rule(small_ct: Path, tmp_path: Path) -> None:
    triangle = [(33.2, 3.7, 0.0), (60.9, 8.1, 0.0), (40.3, 25.6, 0.0)]  # vertices off the pixel grid
    rois = {
        1: [("CLOSED_PLANAR", square(9.5, 9.5, 29.5, 29.5, 0)),  # ring: outer contour
            ("CLOSED_PLANAR", square(14.5, 14.5, 24.5, 24.5, 0)),  # ... and the hole inside it
            ("CLOSED_PLANAR", triangle),
            ("CLOSED_PLANAR", square(4.5, 4.5, 9.5, 9.5, 2)),  # two islands on the next slice
            ("CLOSED_PLANAR", square(40.5, 40.5, 50.5, 45.5, 2)),
            ("CLOSED_PLANAR", square(54.5, 54.5, 70.5, 70.5, 4)),  # reaches outside the field of view: clipped
            ("POINT", [(5.0, 5.0, 4.0)]),
            ("OPEN_PLANAR", [(1.0, 1.0, 4.0), (20.0, 1.0, 4.0), (20.0, 9.0, 4.0)]),
            ("CLOSED_PLANAR", square(1.5, 1.5, 5.5, 5.5, 50))],  # off every slice
    }
    labels = medseg.load(hand_made(small_ct, rois, tmp_path / "rt.dcm"))
    assert labels.shape == (64, 64, 3) and labels.label_names == {1: "roi 1"}
    ring = np.zeros((64, 64), bool)
    ring[10:30, 10:30] = True
    ring[15:25, 15:25] = False
    tri = centre_rule([np.array(triangle)[:, :2]], (64, 64))
    assert 0 < tri.sum() < 300
    assert np.array_equal(labels.array[:, :, 0] == 1, ring | tri)
    islands = np.zeros((64, 64), bool)
    islands[5:10, 5:10] = islands[41:51, 41:46] = True
    assert np.array_equal(labels.array[:, :, 1] == 1, islands)
    clipped = np.zeros((64, 64), bool)
    clipped[55:, 55:] = True
    assert np.array_equal(labels.array[:, :, 2] == 1, clipped)
    warnings = " | ".join(labels.warnings)
    assert "1 POINT contours skipped" in warnings and "1 OPEN_PLANAR contours skipped" in warnings
    assert "1 contours outside the series' slices skipped" in warnings


def test_real_rtstruct_rasterises_onto_its_two_slices(shared_data: Path) -> None:
    folder = shared_data / "dicom_rtstruct"
    labels = medseg.load(folder / "rtstruct.dcm")
    ct = medseg.load(folder / "ct")
    assert labels.same_grid(ct) and labels.label_names == {1: "ROI-1"}
    assert any("frame of reference" in w for w in labels.warnings)  # rt-utils wrote a fresh one; images match
    ds = pydicom.dcmread(folder / "rtstruct.dcm")
    polygons = [ct.world_to_index(np.reshape(np.asarray(c.ContourData, float), (-1, 3)))[:, :2]
                for c in ds.ROIContourSequence[0].ContourSequence]
    expected = centre_rule(polygons, ct.shape[:2])  # outer contour with an inner one: a ring
    assert expected.sum() > 1000
    assert np.array_equal(labels.array[:, :, 0] == 1, expected)
    assert not labels.array[:, :, 1].any()


def test_label_map_round_trip_through_rtstruct(reference_labels: LabelMap, ct_folder: Path, tmp_path: Path) -> None:
    path = save_rtstruct(reference_labels, ct_folder, tmp_path / "rt.dcm")
    result = subprocess.run([require_dciodvfy(), str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")] == []
    back = load_rtstruct(path, reference=ct_folder)
    assert back.label_names == reference_labels.label_names and back.same_grid(reference_labels)
    for value in reference_labels.label_names:
        a, b = reference_labels.array == value, back.array == value
        assert (a & b).sum() / (a | b).sum() >= 0.99, reference_labels.label_names[value]
    assert np.array_equal(back.array, reference_labels.array)  # pixel-edge outlines: exact
    ds = pydicom.dcmread(path)
    holes = [c for roi in ds.ROIContourSequence for c in roi.ContourSequence]
    assert all(c.ContourGeometricType == "CLOSED_PLANAR" for c in holes)
    assert {r.ROINumber for r in ds.StructureSetROISequence} == set(reference_labels.label_names)


def test_overlapping_rois_are_not_merged(small_ct: Path, tmp_path: Path) -> None:
    path = hand_made(small_ct, {1: [("CLOSED_PLANAR", square(9.5, 9.5, 29.5, 29.5, 0))],
                                2: [("CLOSED_PLANAR", square(19.5, 19.5, 39.5, 39.5, 0))]}, tmp_path / "rt.dcm")
    with pytest.raises(LabelError, match=r"ROIs 1 'roi 1' and 2 'roi 2' overlap in 100 voxels"):
        medseg.load(path)
    first, second = load_segments(path)
    assert int(first.mask.array.sum()) == int(second.mask.array.sum()) == 400


def test_bad_structure_sets_name_the_file_and_the_reason(small_ct: Path, tmp_path: Path, shared_data: Path) -> None:
    ring = [("CLOSED_PLANAR", square(9.5, 9.5, 29.5, 29.5, 0))]
    other_frame = hand_made(small_ct, {1: ring}, tmp_path / "frame.dcm", frame="1.2.3.4", reference_images=False)
    with pytest.raises(GeometryError, match=r"frame\.dcm: frame of reference 1\.2\.3\.4 does not match"):
        medseg.load(other_frame, reference=small_ct)
    off = hand_made(small_ct, {1: [("CLOSED_PLANAR", square(9.5, 9.5, 29.5, 29.5, 30))]}, tmp_path / "off.dcm")
    with pytest.raises(GeometryError, match=r"off\.dcm: all 1 closed contours lie off every slice"):
        medseg.load(off)
    lonely = tmp_path / "alone"
    lonely.mkdir()
    moved = (tmp_path / "off.dcm").rename(lonely / "rt.dcm")
    with pytest.raises(ReadError, match=r"rt\.dcm: referenced series .* not found"):
        medseg.load(moved)
    with pytest.raises(GeometryError, match="not on the source series' grid"):
        save_rtstruct(medseg.load(shared_data / "dicom_rtstruct" / "rtstruct.dcm"), small_ct, tmp_path / "x.dcm")
