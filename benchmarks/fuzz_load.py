"""Fuzzing ``medseg.load`` with mutated copies of real files (issue 11).

Run from the repository root::

    python -m benchmarks.fuzz_load --n 10000 --seed 0 [--record]
    python -m benchmarks.fuzz_load --seed 0 --reproduce 1234 --keep /tmp/fuzz   # one input, traceback shown

Sources are pydicom's test corpus (``pydicom.data.get_testdata_files()``, with
the ``pydicom-data`` extra) and the NIfTI, PNG, TIFF, JPEG and DICOM files of
``../shared/data``, and its DICOM series folders (one slice mutated, the
others linked, so that series assembly and the parallel decoders are reached).
Input ``i`` of seed ``s`` is fully determined by ``(s, i)``: a source (format
first, so that DICOM does not crowd out the rest) and one to three mutations: byte flips, truncation, a duplicated chunk, or an
overwritten header field that the format's reader trusts (DICOM element
values, VR bytes and encapsulated fragment headers; NIfTI dims, datatype,
vox_offset, pixdim and scaling; PNG IHDR, its CRC recomputed; TIFF IFD
entries; JPEG SOF and JPEG 2000 SIZ fields, also inside DICOM). NIfTI fields
are mutated in the inflated stream, which is compressed again.

Each input is written to a temporary file with the source's suffix (so
``medseg.load`` picks the same reader) and loaded in one of ``--workers``
child processes, each under an address-space limit, so that a hang or a crash
is counted, not fatal. Outcomes: ``ok`` (loaded), ``error`` (a MedsegError
with a one-line message naming the file), ``unclear`` (a MedsegError without
that), ``escape`` (any other exception, BaseException subclasses of native
decoders included), ``slow`` (more than ``--timeout`` s of CPU time, all
threads of the worker, so that other jobs on the machine do not count; a
worker busy that long is killed) and ``crash`` (the worker died). The target
is 0 escapes, 0 slow, 0 crashes, 0 unclear messages.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import logging
import multiprocessing as mp
import os
import random
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
SLOW_S = 10.0  # an input keeping the loader busy (CPU seconds) longer than this counts as a hang
WALL_LIMIT_S = 120.0  # a worker silent this long (wall clock) is killed even when idle (a deadlock)
_POLL_S = 0.25  # how often the CPU time of busy workers is read
MEMORY_LIMIT_BYTES = 6 << 30  # address space per worker: a trusted giant declared size fails instead of swapping
FORMAT_WEIGHTS = {"dicom": 0.45, "series": 0.05, "nifti": 0.15, "png": 0.12, "tiff": 0.12, "jpeg": 0.11}
_SHARED_SUFFIXES = {".nii.gz": "nifti", ".png": "png", ".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg", ".dcm": "dicom"}
_LOAD_SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
OUTCOMES = ("ok", "error", "unclear", "escape", "slow", "crash")
FINDINGS = ("unclear", "escape", "slow", "crash")


# ---- sources ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """A file to mutate, or a DICOM series folder (format ``series``) one slice of which is mutated.

    ``fmt`` is a key of :data:`FORMAT_WEIGHTS`; ``suffix`` the one the copies keep. ``beside`` marks a
    DICOM SEG or RTSTRUCT, whose copies get the source's sibling folders (where its series lies).
    """

    path: Path
    fmt: str
    suffix: str
    beside: bool = False


def _suffix(name: str) -> str:
    """The suffix that makes ``medseg.load`` pick this file's reader ('' for DICOM files without one)."""
    lower = name.lower()
    return next((s for s in _LOAD_SUFFIXES if lower.endswith(s)), "")


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(132)
    return head[128:132] == b"DICM" or head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x08")


def find_sources(shared: Path | None = SHARED_DATA) -> list[Source]:
    """pydicom's test corpus plus the fuzzable files under ``shared`` (None: the corpus only), sorted.

    A missing ``shared`` folder is skipped, unless ``MEDSEG_REQUIRE_SHARED_DATA``
    is set (CI): then it raises FileNotFoundError.
    """
    from pydicom.data import get_testdata_files

    found = {Path(p) for p in get_testdata_files() if Path(p).is_file() and _is_dicom(Path(p))}
    sources = [Source(p, "dicom", _suffix(p.name), _is_label_object(p)) for p in found]
    if shared is not None and not shared.is_dir():
        if os.environ.get("MEDSEG_REQUIRE_SHARED_DATA", "") not in ("", "0"):
            raise FileNotFoundError(f"shared data not found at {shared} and MEDSEG_REQUIRE_SHARED_DATA is set")
        shared = None
    for path in shared.rglob("*") if shared is not None else ():
        if path.is_file():
            fmt = next((f for s, f in _SHARED_SUFFIXES.items() if path.name.lower().endswith(s)), None)
            if fmt is not None or _is_dicom(path):  # DICOM files often have no suffix, or a UID for one
                fmt = fmt or "dicom"
                sources.append(Source(path, fmt, _suffix(path.name), fmt == "dicom" and _is_label_object(path)))
        elif len(_series_files(path)) > 1:
            sources.append(Source(path, "series", ""))
    return sorted(sources, key=lambda s: str(s.path))


def _is_label_object(path: Path) -> bool:
    """True for a DICOM SEG or RTSTRUCT (by Modality), which medseg reads on the grid of the series it references."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the corpus's odd files make pydicom warn
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
        return str(ds.get("Modality", "")).upper() in ("SEG", "RTSTRUCT")
    except Exception:  # noqa: BLE001 - a corpus file pydicom cannot read is fuzzed as a plain file
        return False


def _series_files(folder: Path) -> list[Path]:
    """The DICOM files of a folder that holds nothing else (no subfolders), sorted; [] otherwise."""
    children = sorted(folder.iterdir())
    return children if all(p.is_file() and _is_dicom(p) for p in children) else []


@functools.cache
def _source_bytes(path: Path, inflate: bool) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if inflate else data


# ---- mutations ----------------------------------------------------------------------------------------------------
_INT16 = (0, 1, 2, 3, 4, 7, 8, 12, 15, 16, 17, 24, 31, 32, 33, 64, 255, 256, 4096, 32767, 32768, 65535)
_INT32 = (0, 1, 2, 3, 255, 256, 65535, 65536, 1 << 20, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
_FLOATS = (0.0, -0.0, -1.0, 0.5, 3.5, 348.0, 352.0, 1e9, 1e38, 1e-38, float("nan"), float("inf"), float("-inf"))


def _near(rng: random.Random, original: int, choices: Sequence[int], limit: int) -> int:
    """An interesting value: one of ``choices``, a neighbour or a multiple of ``original``, or random (``< limit``)."""
    pick = rng.random()
    if pick < 0.5:
        return rng.choice(choices) % limit
    if pick < 0.8:
        return rng.choice((original + 1, original - 1, original * 2, original * 3, original // 2)) % limit
    return rng.randrange(limit)


def _flip(rng: random.Random, data: bytearray) -> str:
    """XOR or overwrite 1-16 bytes, half of the time within the first 4 KiB (headers)."""
    if not data:
        return "flip: empty"
    span = len(data) if rng.random() < 0.5 else min(len(data), 4096)
    spots = sorted(rng.randrange(span) for _ in range(rng.randint(1, 16)))
    for at in spots:
        data[at] = rng.choice((0x00, 0xFF, 0x7F, 0x80)) if rng.random() < 0.3 else data[at] ^ rng.randint(1, 255)
    return f"flip {len(spots)} bytes at {spots[0]}..{spots[-1]}"


def _truncate(rng: random.Random, data: bytearray) -> str:
    """Cut the file anywhere, or within its first 4 KiB."""
    span = len(data) if rng.random() < 0.6 else min(len(data), 4096)
    at = rng.randrange(span + 1)
    del data[at:]
    return f"truncate at {at}"


def _duplicate(rng: random.Random, data: bytearray) -> str:
    """Insert a copy of a chunk (1 B to a quarter of the file) somewhere else, or write it over the bytes there."""
    if not data:
        return "duplicate: empty"
    length = rng.randint(1, max(1, min(len(data) // 4, 1 << 16)))
    start = rng.randrange(len(data) - length + 1)
    chunk, at = bytes(data[start : start + length]), rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        data[at:at] = chunk
        return f"insert copy of {start}+{length} at {at}"
    data[at : at + length] = chunk
    return f"overwrite {at}+{length} with copy of {start}"


def _set_struct(data: bytearray, at: int, fmt: str, value: Any) -> None:
    data[at : at + struct.calcsize(fmt)] = struct.pack(fmt, value)


# DICOM --------------------------------------------------------------------------------------------------------------
_VRS = (
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV"
).split()
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_SYNTAXES = (
    b"1.2.840.10008.1.2",
    b"1.2.840.10008.1.2.1",
    b"1.2.840.10008.1.2.1.99",
    b"1.2.840.10008.1.2.2",
    b"1.2.840.10008.1.2.4.50",
    b"1.2.840.10008.1.2.4.51",
    b"1.2.840.10008.1.2.4.57",
    b"1.2.840.10008.1.2.4.70",
    b"1.2.840.10008.1.2.4.80",
    b"1.2.840.10008.1.2.4.81",
    b"1.2.840.10008.1.2.4.90",
    b"1.2.840.10008.1.2.4.91",
    b"1.2.840.10008.1.2.4.201",
    b"1.2.840.10008.1.2.5",
    b"1.2.840.10008.1.2.4.999",
    b"1.2.3",
    b"",
)
_TEXT_VALUES = {
    "IS": (b"0", b"-1", b"1", b"2", b"3", b"100", b"9999", b"2147483648", b"1\\2", b"", b"abc", b"1.5", b"1e9"),
    "DS": (b"0", b"-1", b"nan", b"inf", b"1e308", b"0.5\\0.5", b"1\\0\\0\\0\\1\\0", b"0\\0\\0\\0\\0\\0", b"", b"x"),
    "CS": (b"MONOCHROME1", b"MONOCHROME2", b"RGB", b"YBR_FULL", b"YBR_FULL_422", b"PALETTE COLOR", b"", b"XYZ"),
    "IT": (b"ORIGINAL\\PRIMARY\\LOCALIZER", b"DERIVED", b"", b"\\\\\\"),
    "MO": (b"CT", b"MR", b"CR", b"SR", b"SEG", b"RTSTRUCT", b"", b"XX"),
    "UI": _SYNTAXES,
}
# keyword: (tag, kind): "US" 16-bit values, "LEN" the element's length field, else a key of _TEXT_VALUES
_DICOM_FIELDS = {
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "HighBit": (0x00280102, "US"),
    "SamplesPerPixel": (0x00280002, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "PlanarConfiguration": (0x00280006, "US"),
    "NumberOfFrames": (0x00280008, "IS"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "TransferSyntaxUID": (0x00020010, "UI"),
    "PixelSpacing": (0x00280030, "DS"),
    "ImagePositionPatient": (0x00200032, "DS"),
    "ImageOrientationPatient": (0x00200037, "DS"),
    "SliceThickness": (0x00180050, "DS"),
    "RescaleSlope": (0x00281053, "DS"),
    "RescaleIntercept": (0x00281052, "DS"),
    "ImageType": (0x00080008, "IT"),
    "Modality": (0x00080060, "MO"),
    "PixelData": (0x7FE00010, "LEN"),
}


@dataclass(frozen=True)
class _Element:
    """Where one DICOM element's parts lie in the file."""

    tag_at: int
    explicit: bool
    length_at: int
    length_fmt: str  # struct format of the length field, with the byte order
    value_at: int
    length: int
    order: str  # "<" or ">"


def _elements(data: bytearray, tag: int, limit: int = 8) -> list[_Element]:
    """Up to ``limit`` plausible encodings of ``tag`` (explicit or implicit VR, either byte order) in ``data``."""
    found: list[_Element] = []
    for order in "<>":
        pattern = struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF)
        at = data.find(pattern)
        while at >= 0 and len(found) < limit:
            vr = bytes(data[at + 4 : at + 6])
            if vr in _LONG_VRS:
                length_at, length_fmt, value_at = at + 8, f"{order}I", at + 12
            elif vr in _VRS:
                length_at, length_fmt, value_at = at + 6, f"{order}H", at + 8
            else:
                length_at, length_fmt, value_at = at + 4, f"{order}I", at + 8
            if value_at <= len(data):
                (length,) = struct.unpack_from(length_fmt, data, length_at)
                if length == 0xFFFFFFFF or value_at + length <= len(data):
                    found.append(_Element(at, vr in _VRS, length_at, length_fmt, value_at, length, order))
            at = data.find(pattern, at + 1)
    return found


def _set_value(data: bytearray, el: _Element, value: bytes, pad: bytes) -> None:
    """Replace ``el``'s value (padded to even length with ``pad``) and its length field."""
    value += pad * (len(value) % 2)
    _set_struct(data, el.length_at, el.length_fmt, len(value))
    data[el.value_at : el.value_at + (0 if el.length == 0xFFFFFFFF else el.length)] = value


def _dicom_field(rng: random.Random, data: bytearray) -> str | None:
    """Overwrite a pixel-description element's value (one or several values), its VR bytes or its length."""
    keyword = rng.choice(list(_DICOM_FIELDS))
    tag, kind = _DICOM_FIELDS[keyword]
    found = _elements(data, tag)
    if not found:
        return None
    el = rng.choice(found)
    if el.explicit and rng.random() < 0.15:
        vr = rng.choice([*_VRS, b"ZZ", b"\x00\x00", b"??", b"ox"])
        data[el.tag_at + 4 : el.tag_at + 6] = vr
        return f"DICOM {keyword} VR -> {vr!r}"
    if kind == "LEN" or el.length == 0xFFFFFFFF:
        if el.length == 0xFFFFFFFF:
            return None
        new = _near(rng, el.length, (0, 1, 2, 0xFFFFFFFF), 1 << 32)
        if el.length_fmt[-1] == "H":
            new &= 0xFFFF
        _set_struct(data, el.length_at, el.length_fmt, new)
        return f"DICOM {keyword} length {el.length} -> {new}"
    if kind == "US":
        original = struct.unpack_from(f"{el.order}H", data, el.value_at)[0] if el.length >= 2 else 0
        values = [_near(rng, original, _INT16, 1 << 16) for _ in range(rng.choice((1, 1, 1, 1, 2, 3)))]
        _set_value(data, el, struct.pack(f"{el.order}{len(values)}H", *values), b"\x00")
        return f"DICOM {keyword} = {values}"
    value = rng.choice(_TEXT_VALUES[kind])
    _set_value(data, el, value, b"\x00" if kind == "UI" else b" ")
    return f"DICOM {keyword} = {value.decode()!r}"


def _fragment_field(rng: random.Random, data: bytearray) -> str | None:
    """Change an encapsulated pixel data item's length, or the first 16 bytes of its fragment (RLE header)."""
    items = [m.start() for m in re.finditer(re.escape(b"\xfe\xff\x00\xe0"), data)][:64]
    if not items:
        return None
    at = rng.choice(items)
    if at + 8 > len(data):
        return None
    if rng.random() < 0.4:
        (length,) = struct.unpack_from("<I", data, at + 4)
        new = _near(rng, length, _INT32, 1 << 32)
        _set_struct(data, at + 4, "<I", new)
        return f"DICOM fragment at {at} length {length} -> {new}"
    word = at + 8 + 4 * rng.randrange(4)
    if word + 4 > len(data):
        return None
    new = _near(rng, struct.unpack_from("<I", data, word)[0], _INT32, 1 << 32)
    _set_struct(data, word, "<I", new)
    return f"DICOM fragment at {at} word {(word - at - 8) // 4} -> {new}"


# codestreams (JPEG files and DICOM fragments) ------------------------------------------------------------------------
_SOF = re.compile(rb"\xff[\xc0\xc1\xc2\xc3\xf7]")  # JPEG baseline, extended, progressive, lossless; JPEG-LS
_J2K_SIZ = re.compile(rb"\xff\x4f\xff\x51")  # SOC then SIZ


def _codestream_field(rng: random.Random, data: bytearray) -> str | None:
    """Overwrite a JPEG SOF field (precision, height, width, components) or a JPEG 2000 SIZ field."""
    sofs = [("SOF", m.start()) for m in _SOF.finditer(data[: 1 << 22])][:16]
    sizs = [("SIZ", m.start() + 2) for m in _J2K_SIZ.finditer(data)][:16]
    spots = sofs + sizs
    if not spots:
        return None
    kind, at = rng.choice(spots)
    if kind == "SOF":  # FFCx Lf(2) P(1) Y(2) X(2) Nf(1)
        name, offset, fmt = rng.choice(
            (("precision", 4, ">B"), ("height", 5, ">H"), ("width", 7, ">H"), ("Nf", 9, ">B"))
        )
    else:  # FF51 Lsiz(2) Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz (4 each) Csiz(2) Ssiz(1)
        name, offset, fmt = rng.choice(
            (
                ("Xsiz", 6, ">I"),
                ("Ysiz", 10, ">I"),
                ("XTsiz", 22, ">I"),
                ("YTsiz", 26, ">I"),
                ("Csiz", 38, ">H"),
                ("Ssiz", 40, ">B"),
            )
        )
    if at + offset + struct.calcsize(fmt) > len(data):
        return None
    original = struct.unpack_from(fmt, data, at + offset)[0]
    bits = 8 * struct.calcsize(fmt)
    new = _near(rng, original, _INT16 if bits <= 16 else _INT32, 1 << bits)
    _set_struct(data, at + offset, fmt, new)
    return f"{kind} {name} {original} -> {new}"


# NIfTI-1 (inflated) -------------------------------------------------------------------------------------------------
# field: (offset, struct code)
_NIFTI_FIELDS = {
    "sizeof_hdr": (0, "i"),
    **{f"dim[{i}]": (40 + 2 * i, "h") for i in range(6)},
    "intent_code": (68, "h"),
    "datatype": (70, "h"),
    "bitpix": (72, "h"),
    **{f"pixdim[{i}]": (76 + 4 * i, "f") for i in range(4)},
    "vox_offset": (108, "f"),
    "scl_slope": (112, "f"),
    "scl_inter": (116, "f"),
    "qform_code": (252, "h"),
    "sform_code": (254, "h"),
    **{f"srow[{i}]": (280 + 4 * i, "f") for i in (0, 3, 5, 10)},  # a scale, an offset, a shear, a flip
}
_NIFTI_INTS = (0, 1, 2, 3, 4, 5, 7, 8, -1, -2, 348, 540, 1000, 32767, -32768)
_NIFTI_DATATYPES = (0, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 9999)


def _nifti_field(rng: random.Random, data: bytearray) -> str | None:
    if len(data) < 348 or 348 not in struct.unpack_from("<i", data) + struct.unpack_from(">i", data):
        return None  # not an inflated NIfTI-1 header
    order = "<" if struct.unpack_from("<i", data)[0] == 348 else ">"
    name = rng.choice(list(_NIFTI_FIELDS))
    offset, code = _NIFTI_FIELDS[name]
    original = struct.unpack_from(order + code, data, offset)[0]
    if code == "f":
        new: Any = rng.choice((*_FLOATS, original * 2, -original))
    elif name == "datatype":
        new = rng.choice(_NIFTI_DATATYPES)
    else:  # int16 fields (sizeof_hdr, int32, takes the same values)
        new = _near(rng, original + 32768, _INT16, 1 << 16) - 32768 if rng.random() < 0.3 else rng.choice(_NIFTI_INTS)
    _set_struct(data, offset, order + code, new)
    return f"NIfTI {name} {original} -> {new}"


# PNG ----------------------------------------------------------------------------------------------------------------
_IHDR_FIELDS = {"width": (16, ">I"), "height": (20, ">I"), "bit_depth": (24, ">B"), "color_type": (25, ">B"),
                "compression": (26, ">B"), "filter": (27, ">B"), "interlace": (28, ">B")}  # fmt: skip


def _png_field(rng: random.Random, data: bytearray) -> str | None:
    """Overwrite an IHDR field (CRC recomputed, so the reader trusts it) or another chunk's length."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    if rng.random() < 0.25:
        chunks, at = [], 8
        while at + 8 <= len(data) and len(chunks) < 64:
            chunks.append(at)
            at += 12 + struct.unpack_from(">I", data, at)[0]
        at = rng.choice(chunks)
        length = struct.unpack_from(">I", data, at)[0]
        new = _near(rng, length, _INT32, 1 << 32)
        _set_struct(data, at, ">I", new)
        return f"PNG {bytes(data[at + 4 : at + 8])!r} chunk length {length} -> {new}"
    name = rng.choice(list(_IHDR_FIELDS))
    offset, fmt = _IHDR_FIELDS[name]
    original = struct.unpack_from(fmt, data, offset)[0]
    new = _near(
        rng, original, _INT32 if fmt == ">I" else (0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 32), 1 << (8 * struct.calcsize(fmt))
    )
    _set_struct(data, offset, fmt, new)
    _set_struct(data, 29, ">I", zlib.crc32(data[12:29]))
    return f"PNG IHDR {name} {original} -> {new}"


# TIFF ---------------------------------------------------------------------------------------------------------------
_TIFF_TAGS = {256: "ImageWidth", 257: "ImageLength", 258: "BitsPerSample", 259: "Compression", 262: "Photometric",
              273: "StripOffsets", 277: "SamplesPerPixel", 278: "RowsPerStrip", 279: "StripByteCounts",
              284: "PlanarConfig", 317: "Predictor", 322: "TileWidth", 323: "TileLength", 324: "TileOffsets",
              325: "TileByteCounts", 339: "SampleFormat"}  # fmt: skip
_TIFF_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}


def _tiff_field(rng: random.Random, data: bytearray) -> str | None:
    """Overwrite an entry of the first IFD (value, array element, count or type) or the next-IFD offset."""
    if len(data) < 8 or data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack_from(order + "I", data, 4)[0]
    if ifd + 2 > len(data):
        return None
    n = struct.unpack_from(order + "H", data, ifd)[0]
    entries = [ifd + 2 + 12 * k for k in range(n) if ifd + 14 + 12 * k <= len(data)]
    if not entries or rng.random() < 0.1:
        at = ifd + 2 + 12 * n
        if at + 4 > len(data):
            return None
        new = rng.choice((ifd, 0, 8, len(data), len(data) + 1000, rng.randrange(len(data))))
        _set_struct(data, at, order + "I", new)
        return f"TIFF next IFD -> {new}"
    chosen = [e for e in entries if struct.unpack_from(order + "H", data, e)[0] in _TIFF_TAGS]
    at = rng.choice(chosen or entries)
    tag, typ, count = struct.unpack_from(order + "HHI", data, at)
    name = _TIFF_TAGS.get(tag, str(tag))
    size = _TIFF_TYPE_SIZE.get(typ, 1) * count
    pick = rng.random()
    if pick < 0.15:
        new = rng.randrange(19)
        _set_struct(data, at + 2, order + "H", new)
        return f"TIFF {name} type {typ} -> {new}"
    if pick < 0.3:
        new = _near(rng, count, _INT32, 1 << 32)
        _set_struct(data, at + 4, order + "I", new)
        return f"TIFF {name} count {count} -> {new}"
    value_at = at + 8
    if size > 4:  # the value is an offset to an array: change the offset or one element
        offset = struct.unpack_from(order + "I", data, value_at)[0]
        if rng.random() < 0.3 or offset >= len(data):
            new = _near(rng, offset, _INT32, 1 << 32)
            _set_struct(data, value_at, order + "I", new)
            return f"TIFF {name} array offset {offset} -> {new}"
        value_at = offset + _TIFF_TYPE_SIZE.get(typ, 1) * rng.randrange(count)
    fmt = order + ("H" if typ == 3 else "I")
    if value_at + struct.calcsize(fmt) > len(data):
        return None
    original = struct.unpack_from(fmt, data, value_at)[0]
    new = _near(rng, original, _INT16 if typ == 3 else _INT32, 1 << (16 if typ == 3 else 32))
    _set_struct(data, value_at, fmt, new)
    return f"TIFF {name} value {original} -> {new}"


_FIELD_MUTATORS: dict[str, tuple[Callable[[random.Random, bytearray], str | None], ...]] = {
    "dicom": (_dicom_field, _dicom_field, _dicom_field, _fragment_field, _codestream_field),
    "series": (_dicom_field, _dicom_field, _dicom_field, _fragment_field, _codestream_field),
    "nifti": (_nifti_field,),
    "png": (_png_field,),
    "tiff": (_tiff_field,),
    "jpeg": (_codestream_field,),
}


# ---- inputs -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mutant:
    """Input ``index`` of a seed: the source, the mutations applied and the resulting bytes.

    For a series source, ``member`` names the slice that ``data`` replaces.
    """

    index: int
    source: Source
    mutations: tuple[str, ...]
    data: bytes
    member: str = ""

    @property
    def name(self) -> str:
        """File (or series folder) name with the source's suffix, e.g. ``000042.nii.gz``."""
        return f"{self.index:06d}{self.source.suffix}"

    def describe(self) -> str:
        """One line: index, source file and mutations."""
        member = f"/{self.member}" if self.member else ""
        return f"#{self.index} {self.source.path.name}{member} ({self.source.fmt}): {'; '.join(self.mutations)}"

    def home(self, folder: Path) -> Path:
        """The folder of its own the input is written to under ``folder``, so that no reader sees another input."""
        return folder / f"{self.index:06d}" / "in"

    def write(self, folder: Path) -> Path:
        """Write the input into :meth:`home` and return the path to load.

        A series becomes that folder: links to the other slices plus the
        mutated one. A SEG or RTSTRUCT lies beside link copies of its source's
        sibling folders, where it finds the series it references.
        """
        home = self.home(folder)
        home.mkdir(parents=True)
        if self.member:
            for part in _series_files(self.source.path):
                if part.name != self.member:
                    (home / part.name).symlink_to(part)
            (home / self.member).write_bytes(self.data)
            return home
        for sibling in self.source.path.parent.iterdir() if self.source.beside else ():
            if sibling.is_dir() and not sibling.name.startswith("."):
                _link_tree(sibling, home / sibling.name)
        path = home / self.name
        path.write_bytes(self.data)
        return path


def _link_tree(source: Path, target: Path) -> None:
    """Recreate the folders under ``source`` at ``target`` with links to its files (readers skip folder links)."""
    for path in source.rglob("*"):
        if path.is_file():
            link = target / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)


def make_mutant(seed: int, index: int, sources: Sequence[Source]) -> Mutant:
    """Input ``index`` of ``seed``: deterministic, independent of the other inputs and of the process."""
    rng = random.Random(f"medseg-fuzz:{seed}:{index}")  # str seeds hash with SHA-512, not PYTHONHASHSEED
    formats = [f for f in FORMAT_WEIGHTS if any(s.fmt == f for s in sources)]
    fmt = rng.choices(formats, weights=[FORMAT_WEIGHTS[f] for f in formats])[0]
    source = rng.choice([s for s in sources if s.fmt == fmt])
    member = rng.choice(_series_files(source.path)) if fmt == "series" else source.path
    inflate = fmt == "nifti" and source.path.name.lower().endswith(".gz") and rng.random() < 0.85
    data = bytearray(_source_bytes(member, inflate))
    mutations = ["inflated"] if inflate else []
    for _ in range(rng.choices((1, 2, 3), weights=(6, 3, 1))[0]):
        kind = rng.choices(("flip", "truncate", "duplicate", "field"), weights=(3, 1.5, 1.5, 6))[0]
        done = rng.choice(_FIELD_MUTATORS[fmt])(rng, data) if kind == "field" else None
        mutations.append(done or {"truncate": _truncate, "duplicate": _duplicate}.get(kind, _flip)(rng, data))
    out = gzip.compress(bytes(data), compresslevel=1, mtime=0) if inflate else bytes(data)
    return Mutant(index, source, tuple(mutations), out, member.name if fmt == "series" else "")


# ---- workers ------------------------------------------------------------------------------------------------------
def _escape_site(exc: BaseException) -> str:
    """``Type at medseg/...py:line`` of the innermost medseg frame the exception passed (else the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}medseg{os.sep}" in f.filename] or frames[-1:]
    where = ""
    if ours:
        f = ours[-1]
        where = (
            f" at {Path(f.filename).relative_to(REPO) if f.filename.startswith(str(REPO)) else f.filename}:{f.lineno}"
        )
    return f"{type(exc).__module__}.{type(exc).__qualname__}{where}"


def _serve(conn: Connection, memory_bytes: int, quiet: bool) -> None:
    """Worker loop: receive a path, ``medseg.load`` it, send back ``(outcome, detail, CPU seconds)``; None stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends the workers
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if quiet:  # native decoders print their complaints to stdout/stderr
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    import medseg
    from medseg.errors import MedsegError

    conn.send("ready")
    while (path := conn.recv()) is not None:
        t0 = time.process_time()  # all threads of this process: decoders may use several
        try:
            medseg.load(path)
            outcome, detail = "ok", ""
        except MedsegError as exc:
            text = str(exc)
            clear = "\n" not in text and path in text
            outcome, detail = ("error", "") if clear else ("unclear", f"{type(exc).__name__}: {text[:300]!r}")
        except BaseException as exc:  # noqa: BLE001 - what the fuzzer hunts for, SystemExit included
            outcome, detail = "escape", f"{_escape_site(exc)}: {' '.join(str(exc).split())[:200]}"
        conn.send((outcome, detail, time.process_time() - t0))


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time (s) of process ``pid``, all threads (Linux ``/proc``); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Worker:
    """One child process loading inputs, restarted after a crash or a kill."""

    def __init__(self, ctx: Any, memory_bytes: int, quiet: bool) -> None:
        self._args = ctx, memory_bytes, quiet
        self.task: Mutant | None = None
        self.path = self.root = Path()
        self._cpu0 = self._wall0 = 0.0
        self._start()

    def submit(self, mutant: Mutant, folder: Path) -> None:
        """Write ``mutant`` into ``folder`` and have the process load it."""
        self.task, self.path, self.root = mutant, mutant.write(folder), mutant.home(folder).parent
        self._cpu0, self._wall0 = _cpu_seconds(self.proc.pid), time.perf_counter()
        self.conn.send(str(self.path))

    def busy_for(self) -> tuple[float, float]:
        """CPU and wall-clock seconds since the current input was submitted."""
        return _cpu_seconds(self.proc.pid) - self._cpu0, time.perf_counter() - self._wall0

    def _start(self) -> None:
        ctx, memory_bytes, quiet = self._args
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, memory_bytes, quiet), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            raise RuntimeError("fuzz worker did not start")

    def restart(self) -> None:
        """Kill the process (if still alive) and start a fresh one."""
        self.proc.kill()
        self.proc.join()
        self.conn.close()
        self._start()

    def stop(self) -> None:
        """Ask the process to exit; kill it if it does not."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join(5)
        self.proc.kill()
        self.conn.close()


@dataclass
class Finding:
    """An input that escaped, hung, crashed a worker or gave an unclear message; reproducible from seed and index."""

    outcome: str
    index: int
    description: str
    detail: str
    seconds: float  # CPU time of the load


@dataclass
class FuzzReport:
    """Outcome counts (overall and per format), findings, wall-clock time (s) and the slowest load (CPU s)."""

    seed: int
    counts: Counter[str] = field(default_factory=Counter)
    by_format: dict[str, Counter[str]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    wall_s: float = 0.0
    slowest_s: float = 0.0
    slowest: str = ""

    @property
    def n(self) -> int:
        """Number of inputs run."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """Counts, then one line per finding with the command that reproduces it."""
        counts = ", ".join(f"{k} {self.counts[k]}" for k in OUTCOMES)
        slowest = f"slowest load {self.slowest_s:.1f} CPU s ({self.slowest})"
        lines = [f"seed {self.seed}, {self.n} inputs in {self.wall_s:.0f} s: {counts}; {slowest}"]
        lines += [
            f"  {f.outcome}: {f.description} -> {f.detail} ({f.seconds:.1f} CPU s); reproduce: "
            f"python -m benchmarks.fuzz_load --seed {self.seed} --reproduce {f.index}"
            for f in self.findings
        ]
        return "\n".join(lines)


def run(
    seed: int,
    n: int,
    sources: Sequence[Source],
    *,
    workers: int = 2,
    timeout_s: float = SLOW_S,
    memory_bytes: int = MEMORY_LIMIT_BYTES,
    quiet: bool = True,
    progress: Callable[[FuzzReport], None] | None = None,
) -> FuzzReport:
    """Load inputs ``0..n-1`` of ``seed`` in ``workers`` child processes and count the outcomes.

    Time is CPU time (s, all threads of the worker), so that other jobs on
    the machine do not make inputs slow: one that keeps its worker busy for
    ``timeout_s`` is counted ``slow`` and the worker killed (also after
    :data:`WALL_LIMIT_S` of wall-clock silence); a worker that dies counts
    ``crash``. ``progress`` is called after every input.
    """
    report = FuzzReport(seed)
    ctx = mp.get_context("spawn")  # fresh interpreters: nothing inherited from the caller (pytest, torch)
    t0 = time.perf_counter()
    todo: Iterator[int] = iter(range(n))
    with tempfile.TemporaryDirectory(prefix="medseg-fuzz-") as tmp:
        pool = [_Worker(ctx, memory_bytes, quiet) for _ in range(workers)]
        try:
            while True:
                for w in pool:
                    if w.task is None and (index := next(todo, None)) is not None:
                        w.submit(make_mutant(seed, index, sources), Path(tmp))
                busy = [w for w in pool if w.task is not None]
                if not busy:
                    break
                ready = wait([w.conn for w in busy], timeout=_POLL_S)
                for w in busy:
                    mutant = w.task
                    cpu, wall = (max(0.0, t) for t in w.busy_for())
                    if w.conn in ready:
                        try:
                            outcome, detail, cpu = w.conn.recv()
                        except (EOFError, OSError):
                            w.proc.join(5)
                            outcome, detail = "crash", f"worker exit code {w.proc.exitcode}"
                            w.restart()
                        if cpu > timeout_s:
                            outcome, detail = "slow", f"{outcome} after {cpu:.0f} CPU s"
                    elif cpu > timeout_s or wall > WALL_LIMIT_S:
                        outcome, detail = "slow", f"busy {cpu:.0f} CPU s ({wall:.0f} s wall), killed"
                        w.restart()
                    else:
                        continue
                    _count(report, mutant, outcome, detail, cpu)  # type: ignore[arg-type]
                    shutil.rmtree(w.root)
                    w.task = None
                    if progress is not None:
                        progress(report)
        finally:
            for w in pool:
                w.stop()
    report.wall_s = time.perf_counter() - t0
    return report


def _count(report: FuzzReport, mutant: Mutant, outcome: str, detail: str, seconds: float) -> None:
    report.counts[outcome] += 1
    report.by_format.setdefault(mutant.source.fmt, Counter())[outcome] += 1
    if outcome in FINDINGS:
        report.findings.append(Finding(outcome, mutant.index, mutant.describe(), detail, seconds))
    if seconds > report.slowest_s:
        report.slowest_s, report.slowest = seconds, mutant.describe()


# ---- command line -------------------------------------------------------------------------------------------------
def reproduce(seed: int, index: int, sources: Sequence[Source], keep: Path | None) -> None:
    """Write input ``index`` of ``seed`` (to ``keep`` or a temporary folder) and load it here, traceback shown."""
    import medseg

    mutant = make_mutant(seed, index, sources)
    folder = keep or Path(tempfile.mkdtemp(prefix="medseg-fuzz-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = mutant.write(folder)
    print(f"{mutant.describe()}\nwritten to {path}")
    t0 = time.perf_counter()
    try:
        print(medseg.load(path))
    finally:
        print(f"{time.perf_counter() - t0:.2f} s")


def _markdown(report: FuzzReport, n_sources: Counter[str], timeout_s: float) -> str:
    cols = ("ok", "error", "escape", "slow", "crash", "unclear")
    rows = "\n".join(
        f"| {fmt} | {n_sources[fmt]} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in cols) + " |"
        for fmt, c in sorted(report.by_format.items())
    )
    total = " | ".join(f"**{report.counts[k]}**" for k in cols)
    findings = "\n".join(f"- {f.outcome}: {f.description} -> {f.detail}" for f in report.findings[:20])
    verdict = "met" if not any(report.counts[k] for k in FINDINGS) else "NOT met"
    return (
        "## Fuzzing `medseg.load` (`python -m benchmarks.fuzz_load`)\n\n"
        f"{report.n} mutated inputs, seed {report.seed}, from pydicom's test corpus and `../shared/data` "
        "(byte flips, truncation, duplicated chunks, overwritten header fields), each loaded in one of two "
        f"worker processes (address space {MEMORY_LIMIT_BYTES >> 30} GiB each, killed after {timeout_s:.0f} s of "
        f"CPU time). Wall-clock {report.wall_s:.0f} s ({report.n / max(report.wall_s, 1e-9):.1f} inputs/s); "
        f"slowest load {report.slowest_s:.2f} CPU s ({report.slowest}).\n\n"
        "| format | source files | inputs | loaded | MedsegError | escapes | slow | crashes | unclear message |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        f"{rows}\n| all | {sum(n_sources.values())} | **{report.n}** | {total} |\n\n"
        f"Target 0 escapes, 0 slow (> {timeout_s:.0f} CPU s), 0 crashes, 0 unclear messages: **{verdict}**."
        + (f"\n\n{findings}" if findings else "")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; exit code 1 when an input escaped, hung, crashed or gave an unclear message."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of mutated inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=SLOW_S, help="CPU seconds before an input counts as slow")
    parser.add_argument("--record", action="store_true", help="write the counts into docs/BENCHMARKS.md")
    parser.add_argument("--reproduce", type=int, metavar="INDEX", help="load one input here, traceback shown")
    parser.add_argument("--keep", type=Path, help="folder to write the --reproduce input to")
    args = parser.parse_args(argv)
    sources = find_sources()
    if args.reproduce is not None:
        reproduce(args.seed, args.reproduce, sources, args.keep)
        return 0
    step = max(1, args.n // 20)

    def progress(report: FuzzReport) -> None:
        if report.n % step == 0:
            print(f"  {report.n}/{args.n}: " + ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())),
                  flush=True)  # fmt: skip

    report = run(args.seed, args.n, sources, workers=args.workers, timeout_s=args.timeout, progress=progress)
    print(report.summary())
    if args.record:
        from benchmarks._record import record

        record("BENCHMARKS.md", "fuzz_load", _markdown(report, Counter(s.fmt for s in sources), args.timeout))
    return 1 if any(report.counts[k] for k in FINDINGS) else 0


if __name__ == "__main__":
    sys.exit(main())
