"""Loading a 300-slice 512x512 CT DICOM series: medseg vs SimpleITK vs MONAI.

Run from the repository root::

    python -m benchmarks.bench_io

The series is built in a temporary folder from ``../shared/data/ct_abdomen_dicom``
(20 real JPEG 2000 lossless slices): slice ``k`` reuses the pixel data of
source slice ``k % 20`` at position ``z0 + 2 mm * k`` with fresh UIDs, and the
files are written in shuffled order so no reader can rely on names. Two
variants are timed: uncompressed (Explicit VR Little Endian, the usual PACS
export) and the original JPEG 2000 lossless codestreams.
Each reader loads the folder in the same process, in interleaved rounds; the
script prints the best-of-N wall-clock times, the ratios against SimpleITK's
``ImageSeriesReader`` (target: medseg <= 0.8x) and whether voxels and geometry
agree, then records them in ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import generate_uid

from benchmarks._record import record
from medseg.io.dicom import load_dicom
from medseg.io.image import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct_abdomen_dicom"
N_SLICES = 300
GAP_MM = 2.0
REPEATS = 3


def best_of_interleaved(
    readers: dict[str, Callable[[], Any]], repeats: int
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Smallest wall-clock and CPU time (s, all threads of this process) of each reader over ``repeats`` rounds,
    and its last result.

    Each round runs every reader once, so a change in machine load (other
    processes share the CPU) affects all readers alike.
    """
    wall = dict.fromkeys(readers, float("inf"))
    cpu = dict.fromkeys(readers, float("inf"))
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in readers.items():
            t0, c0 = time.perf_counter(), time.process_time()
            results[name] = fn()
            wall[name] = min(wall[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return wall, cpu, results


def build_series(folder: Path, *, decompress: bool) -> None:
    """Write ``N_SLICES`` slices made from the shared CT's slices, in shuffled file order.

    ``decompress`` stores the pixels uncompressed (Explicit VR Little Endian,
    the usual PACS export); otherwise the original JPEG 2000 lossless
    codestreams are kept.
    """
    sources = sorted((pydicom.dcmread(p) for p in DATA.iterdir()), key=lambda ds: float(ds.ImagePositionPatient[2]))
    if decompress:
        for ds in sources:
            ds.decompress()
    z0 = float(sources[0].ImagePositionPatient[2])
    series_uid, study_uid = generate_uid(entropy_srcs=["bench_io", "series"]), generate_uid(entropy_srcs=["bench_io"])
    order = np.random.default_rng(0).permutation(N_SLICES)
    for k in range(N_SLICES):
        ds = sources[k % len(sources)]
        sop_uid = generate_uid(entropy_srcs=["bench_io", str(k)])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series_uid, study_uid
        ds.InstanceNumber = k + 1
        x, y = (float(v) for v in ds.ImagePositionPatient[:2])
        ds.ImagePositionPatient = [x, y, z0 + GAP_MM * k]
        ds.SliceLocation = z0 + GAP_MM * k
        ds.save_as(folder / f"{order[k]:05d}.dcm", enforce_file_format=True)


def load_sitk(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def load_monai(folder: Path) -> Any:
    from monai.transforms import LoadImage

    return LoadImage(reader="PydicomReader", image_only=True)(str(folder))


def compare(image: Image, ref: sitk.Image, monai_img: Any) -> dict[str, bool]:
    """Voxel and geometry agreement of medseg with SimpleITK and MONAI (MONAI's affine is RAS)."""
    ref_array = sitk.GetArrayViewFromImage(ref).transpose(2, 1, 0)
    monai_array = np.asarray(monai_img)
    monai_affine = np.asarray(monai_img.affine, dtype=float)
    return {
        "voxels_sitk": bool(np.array_equal(image.array, ref_array)),
        "geometry_sitk": bool(
            np.allclose(image.spacing, ref.GetSpacing(), atol=1e-6)
            and np.allclose(image.origin, ref.GetOrigin(), atol=1e-4)
            and np.allclose(image.direction.ravel(), ref.GetDirection(), atol=1e-6)
        ),
        "voxels_monai": monai_array.shape == image.shape and bool(np.array_equal(monai_array, image.array)),
        "geometry_monai": bool(np.allclose(monai_affine, image.affine_ras, atol=1e-4)),
    }


def run_variant(decompress: bool) -> tuple[str, dict[str, float], dict[str, float], dict[str, bool]]:
    """Build one series variant in a temporary folder and time the three readers on it."""
    with tempfile.TemporaryDirectory(prefix="bench_io_") as tmp:
        folder = Path(tmp)
        build_series(folder, decompress=decompress)
        readers = {
            "medseg load_dicom": lambda: load_dicom(folder),
            "SimpleITK ImageSeriesReader": lambda: load_sitk(folder),
            "MONAI LoadImage(PydicomReader)": lambda: load_monai(folder),
        }
        times, cpu, results = best_of_interleaved(readers, REPEATS)
        image, ref, monai_img = results.values()
        agree = compare(image, ref, monai_img)
    shape = "x".join(map(str, image.shape))
    return f"{shape} {image.array.dtype}, {image.meta['transfer_syntax']}", times, cpu, agree


def main() -> None:
    sections = []
    for decompress in (True, False):
        title, times, cpu, agree = run_variant(decompress)
        t_medseg, t_sitk = times["medseg load_dicom"], times["SimpleITK ImageSeriesReader"]
        verdict = "met" if t_medseg <= 0.8 * t_sitk and agree["voxels_sitk"] else "NOT met"
        print(f"series {title}, best of {REPEATS} interleaved rounds")
        for name, t in times.items():
            print(f"  {name:32s} {t:7.2f} s   {t / t_sitk:5.2f}x SimpleITK   CPU {cpu[name]:6.2f} s")
        print("  agreement:", ", ".join(f"{k}={v}" for k, v in agree.items()))
        print(f"  target medseg <= 0.8x SimpleITK with identical voxels: {verdict}")
        table = "\n".join(
            f"| {name} | {t:.2f} | {t / t_sitk:.2f}x | {cpu[name]:.2f} | {cpu[name] / cpu['SimpleITK ImageSeriesReader']:.2f}x |"
            for name, t in times.items()
        )
        sections.append(
            f"**{title}**\n\n| reader | wall (s) | vs SimpleITK | CPU (s) | CPU vs SimpleITK |\n"
            f"| --- | ---: | ---: | ---: | ---: |\n{table}\n\n"
            f"Agreement with medseg: voxels SimpleITK {agree['voxels_sitk']}, geometry SimpleITK "
            f"{agree['geometry_sitk']}, voxels MONAI {agree['voxels_monai']}, affine MONAI (RAS) "
            f"{agree['geometry_monai']}. Target medseg <= 0.8x SimpleITK with identical voxels: **{verdict}**."
        )
    record(
        "BENCHMARKS.md",
        "bench_io",
        "### DICOM series loading (`benchmarks/bench_io.py`)\n\n"
        f"A {N_SLICES}-slice CT series (one file per slice, shuffled file names) built from `ct_abdomen_dicom`, "
        "stored uncompressed and with its original JPEG 2000 lossless codestreams; best of "
        f"{REPEATS} interleaved rounds in one process on {os.cpu_count()} CPU cores (CPU: process time summed over "
        "all threads; wall-clock ratios move with machine load when other jobs share the CPU).\n\n"
        + "\n\n".join(sections),
    )


if __name__ == "__main__":
    main()
