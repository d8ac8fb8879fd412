"""Fuzzing ``medseg.load`` (issue 11): mutated real files load or raise a MedsegError, quickly, never anything else.

``test_500_mutated_inputs`` runs the seeded mutator of ``benchmarks/fuzz_load.py``
in two worker processes; ``python -m benchmarks.fuzz_load --seed 11 --reproduce
INDEX`` replays one of its inputs with the traceback. The other tests pin the
escapes and hangs fuzzing found, each on a file built here.
"""

from __future__ import annotations

import gzip
import struct
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames

import medseg
from benchmarks import fuzz_load
from medseg.errors import ReadError
from medseg.io.dicom import save_dicom_series
from medseg.io.guard import decoding
from medseg.io.image import Image

FUZZ_SEED = 11  # fixed: CI runs the same 500 inputs every time
N_INPUTS = 500

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def sources(shared_data: Path) -> list[fuzz_load.Source]:
    return fuzz_load.find_sources(shared_data)


def test_500_mutated_inputs_load_or_raise_one_line_medseg_errors(sources):
    report = fuzz_load.run(FUZZ_SEED, N_INPUTS, sources, workers=2)
    print("\n" + report.summary())
    assert report.n == N_INPUTS
    assert not report.findings, report.summary()  # escapes, slow inputs, crashed workers, unclear messages
    assert report.counts["ok"] > 0 and report.counts["error"] > 0
    assert set(report.by_format) == set(fuzz_load.FORMAT_WEIGHTS)


def test_mutants_are_reproducible_from_seed_and_index(sources):
    first = [fuzz_load.make_mutant(FUZZ_SEED, i, sources) for i in range(40)]
    assert first == [fuzz_load.make_mutant(FUZZ_SEED, i, sources) for i in range(40)]
    assert len({m.data for m in first}) == len(first)
    for m in first:
        assert m.name.endswith(m.source.suffix) and m.mutations
        if "inflated" in m.mutations:  # NIfTI header fields are changed in the inflated stream
            assert gzip.decompress(m.data)
        if any(x.startswith("PNG IHDR") for x in m.mutations):  # with a CRC the reader trusts
            assert struct.unpack_from(">I", m.data, 29)[0] == zlib.crc32(m.data[12:29])


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_decoder_guard_lets_interrupts_through(exc):
    with pytest.raises(exc), decoding("f.dcm", "cannot decode"):
        raise exc()


def test_decoder_guard_turns_base_exceptions_into_one_line_read_errors():
    class Panic(BaseException):  # what pyo3 raises for a Rust panic
        pass

    with (
        pytest.raises(ReadError, match=r"^f\.dcm: cannot decode \(RLE: index out of bounds\)$"),
        decoding("f.dcm", "cannot decode", "RLE"),
    ):
        raise Panic("index\nout of bounds")


def _series_file(tmp_path: Path, **attributes) -> Path:
    """One uncompressed 6 x 8 CT slice written by medseg, with ``attributes`` set."""
    image = Image(np.arange(48, dtype=np.int16).reshape(6, 8, 1), spacing=(0.5, 0.5, 1.0), modality="CT")
    path = save_dicom_series(image, tmp_path / "series", seed="fuzz")[0]
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    return path


def _load_error(path: Path) -> str:
    t0 = time.perf_counter()
    with pytest.raises(ReadError) as info:
        medseg.load(path)
    assert time.perf_counter() - t0 < 5
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_rust_rle_decoder_panic_is_a_read_error(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    struct.pack_into("<I", frame, 8, 2000)  # second RLE segment starts inside the first: pylibjpeg-rle panics
    ds.PixelData = encapsulate([bytes(frame)])
    ds.save_as(path := tmp_path / "rle.dcm")
    assert "cannot decode pixel data (RLE Lossless" in _load_error(path)


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"SamplesPerPixel": [1, 3]}, "SamplesPerPixel is [1, 3], not one integer"),
        ({"BitsStored": 40}, "BitsStored 40 is not between 1 and BitsAllocated 16"),
        ({"Rows": 60000}, "header declares 720000 bytes of pixels"),  # the file holds 96 bytes
        ({"NumberOfFrames": 2147483648}, "room for 1 frames at most"),  # was a loop over 2**31 frames
        ({"NumberOfFrames": "1\\2"}, "is not a whole number of frames"),
    ],
)
def test_impossible_pixel_attributes_are_read_errors(tmp_path, attributes, reason):
    assert reason in _load_error(_series_file(tmp_path, **attributes))


def test_multivalued_transfer_syntax_and_unknown_vr_are_read_errors(tmp_path):
    path = _series_file(tmp_path)
    raw = path.read_bytes()
    syntax = raw.index(b"\x02\x00\x10\x00UI")  # (0002,0010) TransferSyntaxUID: give it two values
    length = struct.unpack_from("<H", raw, syntax + 6)[0]
    value = raw[syntax + 8 : syntax + 8 + length].rstrip(b"\x00") + b"\\1.2.3\x00"
    value += b"\x00" * (len(value) % 2)
    path.write_bytes(raw[: syntax + 6] + struct.pack("<H", len(value)) + value + raw[syntax + 8 + length :])
    assert "TransferSyntaxUID is" in _load_error(path)
    modality = raw.index(b"\x08\x00\x60\x00CS")  # (0008,0060) Modality with a VR pydicom does not know
    path.write_bytes(raw[: modality + 4] + b"ZZ" + raw[modality + 6 :])
    assert "corrupt DICOM element Modality" in _load_error(path)


def test_huge_rescale_gives_float64_voxels_not_an_overflow(tmp_path):
    image = medseg.load(_series_file(tmp_path, RescaleIntercept="1e308"))
    assert image.array.dtype == np.float64 and image.array.min() == 1e308


def test_jpeg2000_codestream_larger_than_the_header_is_refused_before_decoding(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    siz = frame.index(b"\xff\x4f\xff\x51")
    struct.pack_into(">I", frame, siz + 8, 1 << 20)  # Xsiz: a million columns (OpenJPEG decoded it for minutes)
    ds.PixelData = encapsulate([bytes(frame)])
    ds.save_as(path := tmp_path / "j2k.dcm")
    assert "codestream is 1048576 x 64 pixels, the header says 64 x 64" in _load_error(path)


def test_nifti_with_impossible_header_is_a_read_error(tmp_path):
    nii = nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.eye(4))
    nib.save(nii, path := tmp_path / "a.nii")
    raw = bytearray(path.read_bytes())
    struct.pack_into("<h", raw, 46, 30000)  # dim[3]: 30000 slices, 1.2 MB of voxels from a 592-byte file
    (big := tmp_path / "big.nii").write_bytes(raw)
    (big_gz := tmp_path / "big.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    assert "header declares" in _load_error(big) and "header declares" in _load_error(big_gz)
    struct.pack_into("<h", raw, 46, 6)
    struct.pack_into("<f", raw, 108, float("inf"))  # vox_offset: nibabel raised OverflowError
    (inf := tmp_path / "inf.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    assert "corrupt or truncated NIfTI file" in _load_error(inf)


def test_tiff_with_impossible_width_is_a_read_error(tmp_path):
    tifffile.imwrite(path := tmp_path / "a.tif", np.zeros((8, 8), np.uint16))
    raw = bytearray(path.read_bytes())
    ifd = struct.unpack_from("<I", raw, 4)[0]
    for k in range(struct.unpack_from("<H", raw, ifd)[0]):
        entry = ifd + 2 + 12 * k
        if struct.unpack_from("<H", raw, entry)[0] == 256:  # ImageWidth: tifffile allocated 2**31 columns
            struct.pack_into("<HHII", raw, entry, 256, 4, 1, 0x7FFFFFFF)
    path.write_bytes(raw)
    assert "header declares" in _load_error(path)
