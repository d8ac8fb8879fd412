"""DICOM SEG out and in: validity (dciodvfy), pixel alignment (highdicom in world space), round trips, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_support.fixtures import CachedSegmenter, require_dciodvfy
from pydicom.sr.codedict import codes

import medseg
from medseg.errors import GeometryError, LabelError, ReadError, WriteError
from medseg.io import load_segments, save_seg
from medseg.io.dicom_seg import load_seg
from medseg.io.dicom_uids import derived_uid, series_uids, with_uids
from medseg.io.image import Image, LabelMap
from medseg.io.resample import resample_to
from medseg.io.structure_codes import ALIASES, STRUCTURES, structure_code

pytestmark = [pytest.mark.xdist_group("dicom_pacs"),
              pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent the intended person name")]
REPO = Path(__file__).resolve().parents[1]
CR_FILE = "RG1_UNCR.dcm"  # pydicom-data: a 1841 x 1955 computed radiograph (odd frame size: bits span bytes)


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's error lines for ``path`` (warnings are not errors)."""
    result = subprocess.run([require_dciodvfy(), str(path)], capture_output=True, text=True, timeout=120, check=False)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def highdicom_on(grid: Image, path: Path) -> LabelMap:
    """highdicom's reading of a SEG (segment numbers combined) as a LabelMap, moved onto ``grid`` in world space."""
    import highdicom as hd

    volume = hd.seg.segread(path).get_volume(combine_segments=True, relabel=False)
    affine = np.asarray(volume.affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = Image(volume.array, spacing=tuple(spacing), origin=tuple(affine[:3, 3]),
                  direction=affine[:3, :3] / spacing)
    return resample_to(image.with_labels(np.asarray(volume.array, np.uint8), {}), grid)


@pytest.fixture(scope="session")
def model_seg(ct_model: CachedSegmenter, ct_image: Image, ct_folder: Path,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[LabelMap, Path]:
    """The shared CT segmented by the demo model, and its SEG."""
    labels = ct_model.segment(ct_image)
    path = save_seg(labels, ct_folder, tmp_path_factory.mktemp("model_seg") / "ct_seg.dcm", segmenter=ct_model,
                    series_number=77, series_description="medseg test", content_creator="Doe^Jane")
    return labels, path


def test_model_seg_of_the_shared_ct_is_valid_aligned_and_reads_back(model_seg: tuple[LabelMap, Path],
                                                                      ct_image: Image, ct_model: CachedSegmenter,
                                                                      ct_folder: Path) -> None:
    labels, path = model_seg
    assert dciodvfy_errors(path) == []
    values = sorted(labels.label_names)  # segment n holds label values[n - 1]
    expected = np.zeros_like(labels.array)
    for number, value in enumerate(values, 1):
        expected[labels.array == value] = number
    assert np.array_equal(highdicom_on(ct_image, path).array, expected)  # highdicom, in world space
    back = medseg.load(path, reference=ct_folder)
    assert back.same_grid(ct_image) and np.array_equal(back.array, labels.array)
    assert back.label_names == labels.label_names
    ds = pydicom.dcmread(path)
    assert ds.NumberOfFrames == len(values) * 20  # every frame written, empty ones included
    assert (ds.SeriesNumber, ds.SeriesDescription, str(ds.ContentCreatorName)) == (77, "medseg test", "Doe^Jane")
    assert ds.SegmentationType == "BINARY"
    algorithm = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == ct_model.name and algorithm.AlgorithmVersion == ct_model.fingerprint()
    assert algorithm.AlgorithmSource == f"medseg {medseg.__version__}"
    liver = next(s for s in ds.SegmentSequence if s.SegmentLabel == "liver")
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Liver.value
    kidney = next(s for s in ds.SegmentSequence if s.SegmentLabel == "kidney_left").SegmentedPropertyTypeCodeSequence[0]
    assert kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Left"
    source = series_uids([pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(ct_folder.iterdir())])
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source.series
    assert ds.StudyInstanceUID == source.study and ds.FrameOfReferenceUID == source.frame_of_reference
    assert {r.ReferencedSOPInstanceUID for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == set(
        source.instances)


@pytest.fixture
def model_seg_beside_ct(model_seg: tuple[LabelMap, Path], ct_folder: Path, tmp_path: Path) -> Path:
    """The model's SEG next to a copy of its CT folder, where ``medseg.load`` finds the series by itself."""
    shutil.copytree(ct_folder, tmp_path / "ct")
    (tmp_path / "seg").mkdir()
    return Path(shutil.copy(model_seg[1], tmp_path / "seg" / "ct_seg.dcm"))


def test_load_finds_the_referenced_series_in_a_sibling_folder(model_seg: tuple[LabelMap, Path],
                                                              model_seg_beside_ct: Path, ct_image: Image) -> None:
    back = medseg.load(model_seg_beside_ct)
    assert back.same_grid(ct_image) and np.array_equal(back.array, model_seg[0].array)
    assert back.warnings == []


def test_sparse_labels_keep_values_names_and_codes_binary_and_labelmap(reference_labels: LabelMap, ct_folder: Path,
                                                                     ct_image: Image, tmp_path: Path) -> None:
    for kind in ("BINARY", "LABELMAP"):
        path = save_seg(reference_labels, ct_folder, tmp_path / f"{kind}.dcm", segmentation_type=kind)
        back = load_seg(path, reference=ct_folder)
        assert np.array_equal(back.array, reference_labels.array), kind
        assert back.label_names == reference_labels.label_names
        assert pydicom.dcmread(path, stop_before_pixels=True).SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    assert dciodvfy_errors(tmp_path / "BINARY.dcm") == []
    values = sorted(reference_labels.label_names)
    combined = highdicom_on(ct_image, tmp_path / "LABELMAP.dcm").array  # highdicom reads LABELMAP too
    assert np.array_equal(combined > 0, reference_labels.array > 0)
    assert np.array_equal(np.asarray(values)[combined[combined > 0] - 1], reference_labels.array[combined > 0])


def test_segments_of_a_label_map_are_named_and_coded(reference_labels: LabelMap, ct_folder: Path,
                                                   tmp_path: Path) -> None:
    path = save_seg(reference_labels, ct_folder, tmp_path / "seg.dcm")
    segments = {s.label: s for s in load_segments(path, reference=ct_folder)}
    assert segments["liver"].type == codes.SCT.Liver and segments["liver"].value == 5
    assert segments["aorta"].category == codes.SCT.AnatomicalStructure
    assert int(segments["spleen"].mask.array.sum()) == int((reference_labels.array == 1).sum())


def test_liver_seg_loads_on_its_ct_grid_with_the_right_volume(shared_data: Path) -> None:
    folder = shared_data / "dicom_seg_liver"
    labels = medseg.load(folder / "liver_seg.dcm")
    ct = medseg.load(folder / "ct")
    assert labels.same_grid(ct) and labels.label_names == {1: "Liver"}
    table = medseg.measure(labels, ct)
    voxels = int(np.count_nonzero(labels.array == 1))
    assert voxels > 100_000
    assert table.loc[table["label"] == 1, "volume_ml"].item() == pytest.approx(voxels * ct.voxel_volume_mm3 / 1000)
    # the same SEG in pydicom's corpus, also big-endian, pointed at that CT
    for name in ("liver.dcm", "liver_expb.dcm"):
        other = load_seg(pydicom.data.get_testdata_file(name), reference=folder / "ct")
        assert np.array_equal(other.array, labels.array), name


def test_radiograph_seg_2d(tmp_path: Path) -> None:
    cr = pydicom.data.get_testdata_file(CR_FILE)
    image = medseg.load(cr)
    array = np.zeros(image.shape, np.uint8)
    array[100:900, 200:1500], array[1000:1800, 300:600], array[500:600, 520:640] = 1, 2, 3
    labels = image.with_labels(array, {1: "right lung", 2: "heart", 3: "nodule"})
    path = save_seg(labels, cr, tmp_path / "cr_seg.dcm")
    assert dciodvfy_errors(path) == []
    back = load_seg(path, reference=cr)
    assert back.ndim == 2 and back.same_grid(image) and np.array_equal(back.array, array)
    import highdicom as hd

    seg = hd.seg.segread(path)
    uid = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    pixels = seg.get_pixels_by_source_instance([uid], combine_segments=True)[0]
    assert np.array_equal(pixels.T, array)


def _highdicom_seg(ct_dir: Path, masks: np.ndarray, kind: str, target: Path) -> Path:
    """A SEG written by highdicom (overlapping or fractional segments, which medseg does not write)."""
    import highdicom as hd

    sources = sorted((pydicom.dcmread(f) for f in ct_dir.iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))
    for ds in sources:
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:  # empty in these files; highdicom refuses it
            del ds.SpecificCharacterSet
    descriptions = [hd.seg.SegmentDescription(n, f"part {n}", codes.SCT.Tissue, codes.SCT.Tissue, "MANUAL")
                    for n in range(1, masks.shape[-1] + 1)]
    seg = hd.seg.Segmentation(sources, masks, kind, descriptions, hd.UID(), 9, hd.UID(), 1, "test", "test", "1", "1",
                              omit_empty_frames=False)
    seg.save_as(target)
    return target


def test_overlapping_segments_are_never_merged(shared_data: Path, tmp_path: Path) -> None:
    ct_dir = shared_data / "dicom_seg_liver" / "ct"
    masks = np.zeros((3, 512, 512, 2), np.uint8)
    masks[:, 100:300, 100:300, 0] = 1
    masks[:, 200:400, 200:400, 1] = 1  # 100 x 100 x 3 voxels in both
    path = _highdicom_seg(ct_dir, masks, "BINARY", tmp_path / "overlap.dcm")
    with pytest.raises(LabelError, match=r"overlap.*part 1.*part 2.*30000 voxels.*load_segments"):
        medseg.load(path, reference=ct_dir)
    first, second = load_segments(path, reference=ct_dir)
    assert int(first.mask.array.sum()) == int(second.mask.array.sum()) == 200 * 200 * 3
    assert int((first.mask.array & second.mask.array).sum()) == 100 * 100 * 3


def test_fractional_segments_are_not_labels(shared_data: Path, tmp_path: Path) -> None:
    ct_dir = shared_data / "dicom_seg_liver" / "ct"
    probability = np.zeros((3, 512, 512, 1), np.float32)
    probability[:, 50:150, 60:90, 0] = 0.5
    path = _highdicom_seg(ct_dir, probability, "FRACTIONAL", tmp_path / "fractional.dcm")
    with pytest.raises(LabelError, match="FRACTIONAL"):
        medseg.load(path, reference=ct_dir)
    (segment,) = load_segments(path, reference=ct_dir)
    assert segment.mask.array.dtype == np.float32
    assert segment.mask.array.max() == pytest.approx(0.5, abs=1 / 255)
    assert int((segment.mask.array > 0).sum()) == 100 * 30 * 3


def test_bad_seg_inputs_name_the_file_and_the_reason(shared_data: Path, ct_folder: Path, reference_labels: LabelMap,
                                                     tmp_path: Path) -> None:
    alone = Path(shutil.copy(pydicom.data.get_testdata_file("liver.dcm"), tmp_path / "liver.dcm"))
    with pytest.raises(ReadError, match=r"liver\.dcm: referenced series .* not found"):
        medseg.load(alone)
    with pytest.raises(GeometryError, match=r"frame of reference .* does not match"):
        medseg.load(shared_data / "dicom_seg_liver" / "liver_seg.dcm", reference=ct_folder)
    with pytest.raises(ReadError, match="per-frame functional groups for 1 frames"):
        medseg.load(pydicom.data.get_testdata_file("liver_1frame.dcm"))
    shifted = Image(reference_labels.array, spacing=(1, 1, 1)).with_labels(reference_labels.array, {})
    with pytest.raises(GeometryError, match="not on the source series' grid"):
        save_seg(shifted, ct_folder, tmp_path / "x.dcm")
    nifti = medseg.save(reference_labels, tmp_path / "labels.nii.gz")
    with pytest.raises(WriteError, match="derives from a DICOM series"):
        medseg.save(medseg.load_labels(nifti), tmp_path / "x.dcm")
    with pytest.raises(WriteError, match="BINARY or LABELMAP"):
        save_seg(reference_labels, ct_folder, tmp_path / "x.dcm", segmentation_type="FRACTIONAL")  # type: ignore[arg-type]


def test_anonymised_series_get_deterministic_uids_used_by_the_seg(ct_folder: Path, reference_labels: LabelMap,
                                                                 tmp_path: Path) -> None:
    files = sorted(ct_folder.iterdir())
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert not headers[0].SeriesInstanceUID and not headers[0].StudyInstanceUID and not headers[0].SOPInstanceUID
    uids = series_uids(headers)
    assert uids.repaired and series_uids(headers) == uids and uids.series.startswith("2.25.") and len(uids.study) <= 64
    shuffled = series_uids(list(reversed(headers)))
    assert (shuffled.study, shuffled.series) == (uids.study, uids.series)
    assert derived_uid("a", 1) == derived_uid("a", 1) != derived_uid("a", 2)
    # a copy carrying the repaired UIDs (as uploaded to a PACS) gives a SEG with the same references and UIDs
    copy = tmp_path / "repaired"
    copy.mkdir()
    for k, f in enumerate(files):
        with_uids(pydicom.dcmread(f), uids, k).save_as(copy / f.name, enforce_file_format=True)
    copied = series_uids([pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(copy.iterdir())])
    assert not copied.repaired and (copied.study, copied.series, copied.instances) == (
        uids.study, uids.series, uids.instances)
    first = pydicom.dcmread(save_seg(reference_labels, ct_folder, tmp_path / "a.dcm"), stop_before_pixels=True)
    again = pydicom.dcmread(save_seg(reference_labels, ct_folder, tmp_path / "b.dcm"), stop_before_pixels=True)
    from_copy = pydicom.dcmread(save_seg(reference_labels, copy, tmp_path / "c.dcm"), stop_before_pixels=True)
    for ds in (again, from_copy):
        assert (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID) == (
            first.SOPInstanceUID, first.SeriesInstanceUID, first.StudyInstanceUID)
    other = reference_labels.with_labels(np.where(reference_labels.array == 5, 0, reference_labels.array))
    changed = pydicom.dcmread(save_seg(other, ct_folder, tmp_path / "d.dcm"), stop_before_pixels=True)
    assert changed.SOPInstanceUID != first.SOPInstanceUID and changed.SeriesInstanceUID == first.SeriesInstanceUID


def test_every_structure_code_is_a_dicom_concept() -> None:
    for name, (type_keyword, _, rgb) in STRUCTURES.items():
        code = structure_code(name)
        assert code.known and code.type == getattr(codes.SCT, type_keyword) and len(rgb) == 3, name
        assert code.category in (codes.SCT.AnatomicalStructure, codes.SCT.Tissue,
                                 codes.SCT.MorphologicallyAbnormalStructure)
    assert all(structure_code(alias).known for alias in ALIASES)
    assert structure_code("Lung Upper Lobe Left").modifier == codes.SCT.Left
    assert structure_code("lungs").modifier == codes.SCT.RightAndLeft
    assert structure_code("vertebrae_L3").type.meaning == "L3 vertebra"
    unknown = structure_code("dense", 7)
    assert not unknown.known and unknown.type == codes.SCT.Unknown and unknown.rgb == structure_code("x", 7).rgb


def test_segment_and_batch_write_segs(shared_data: Path, tmp_path: Path) -> None:
    from medseg_threshold_plugin import FixedThreshold

    from medseg.batch import run_batch
    from medseg.workflows import segment_files

    ct_dir = shared_data / "dicom_seg_liver" / "ct"
    threshold = FixedThreshold(400.0)
    (written,) = segment_files(threshold, [ct_dir], tmp_path / "segment", output_format_name="dicom-seg")
    ct = medseg.load(ct_dir)
    expected = (ct.array > 400).astype(np.uint8)
    assert written.name == "ct.dcm" and np.array_equal(medseg.load(written, reference=ct_dir).array, expected)
    inputs = tmp_path / "inputs"
    shutil.copytree(ct_dir, inputs / "ct")
    result = run_batch(threshold, inputs, tmp_path / "batch", output_format="seg")
    assert result.exit_code == 0
    (case,) = (tmp_path / "batch" / "cases").iterdir()
    assert sorted(p.name for p in case.iterdir()) == ["instances.nii.gz", "labels.dcm", "measurements.csv"]
    seg = medseg.load(case / "labels.dcm", reference=inputs / "ct")
    assert seg.label_names == {1: "dense"} and seg.same_grid(ct)
    ds = pydicom.dcmread(case / "labels.dcm", stop_before_pixels=True)
    assert ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == threshold.name


def _cli(*args: object) -> None:
    from medseg.cli import main

    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    assert done.value.code in (None, 0)


def test_batch_cli_output_format_seg(shared_data: Path, tmp_path: Path) -> None:
    """``medseg batch SEGMENTER SCANS OUT --output-format seg``, the spelling of the issue, writes SEGs."""
    ct_dir = shared_data / "dicom_seg_liver" / "ct"
    shutil.copytree(ct_dir, tmp_path / "inputs" / "ct")
    _cli("batch", "classical:threshold:lower=400", tmp_path / "inputs", tmp_path / "out", "--output-format", "seg", "-q")
    (case,) = (tmp_path / "out" / "cases").iterdir()
    seg = medseg.load(case / "labels.dcm", reference=ct_dir)
    assert np.array_equal(seg.array, (medseg.load(ct_dir).array >= 400).astype(np.uint8))


def test_seg_and_rtstruct_are_ground_truth_labels_and_training_data(shared_data: Path, tmp_path: Path) -> None:
    import pandas as pd
    from medseg_threshold_plugin import FixedThreshold

    from medseg.batch import run_batch
    from medseg.config import load_config
    from medseg.train.dataset import load_cases, read_dataset

    seg_folder, rt_folder = shared_data / "dicom_seg_liver", shared_data / "dicom_rtstruct"
    for name, gt in (("seg", seg_folder / "liver_seg.dcm"), ("rt", rt_folder / "rtstruct.dcm")):
        pred = medseg.save(medseg.load(gt), tmp_path / f"{name}_pred.nii.gz")  # the same labels, as NIfTI
        _cli("evaluate", pred, gt, "--out", tmp_path / f"{name}_eval")
        per_case = pd.read_csv(tmp_path / f"{name}_eval" / "per_case.csv")
        assert per_case["dice"].tolist() == [1.0], name
    _cli("measure", seg_folder / "liver_seg.dcm", "--image", seg_folder / "ct", "--out", tmp_path / "liver.csv")
    table = pd.read_csv(tmp_path / "liver.csv")
    assert table["volume_ml"].tolist() == pytest.approx([70.36], abs=0.01)
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"training": [{"image": str(seg_folder / "ct"),
                                                 "label": str(seg_folder / "liver_seg.dcm")}]}))
    config = load_config(REPO / "tests" / "data" / "ct_organs_config.yaml")
    (case,) = load_cases(read_dataset(dataset, config).train, config, dataset)
    assert int((case.label.array == config.labels["liver"]).sum()) == 107098
    inputs, gt = tmp_path / "inputs", tmp_path / "gt"
    shutil.copytree(seg_folder / "ct", inputs / "ct")
    gt.mkdir()
    shutil.copy(seg_folder / "liver_seg.dcm", gt / "ct.dcm")  # batch --gt: a SEG, found beside the inputs
    result = run_batch(FixedThreshold(400.0), inputs, tmp_path / "batch", gt_dir=gt)
    assert result.exit_code == 0 and (tmp_path / "batch" / "metrics.csv").is_file()
