"""Writing and reading a DICOM SEG of a 512x512x300 CT with 40 labels, against the same label map as .nii.gz.

Run from the repository root::

    python -m benchmarks.bench_dicom_seg

A 300-slice 512x512 CT series (uncompressed, synthetic voxels) is written to a
temporary folder with :func:`medseg.save_dicom_series`; the label map holds 40
labels (random ellipsoids, 8-60 mm, overlaps resolved by label order) on its grid.
Timed, best of three: :func:`medseg.io.save_seg` (BINARY, 12 000 frames, and
LABELMAP, 300 frames), :func:`medseg.io.dicom_seg.load_seg`, and ``medseg.save``
/ ``medseg.load`` of ``labels.nii.gz``; once, highdicom's own
``Segmentation(...).save_as`` of the same BINARY SEG for comparison. Peak
memory is the tracemalloc peak of a separate run of each step (numpy buffers
included). Target: SEG export within 3x the NIfTI time. Figures go to
``docs/BENCHMARKS.md`` (section ``bench_dicom_seg``).
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._record import record

SHAPE = (512, 512, 300)
SPACING = (0.8, 0.8, 1.5)
N_LABELS = 40
REPEATS = 3


def _series(folder: Path) -> Path:
    """A 300-slice CT series (smooth synthetic HU values) in ``folder``."""
    from medseg import Image, save_dicom_series

    x, y, z = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    hu = (40 * np.sin(x / 23.0) + 30 * np.cos(y / 17.0) + 0.2 * z).astype(np.int16)
    save_dicom_series(Image(hu, spacing=SPACING, origin=(-204.8, -204.8, -300.0), modality="CT"), folder,
                      series_description="bench", seed="bench_dicom_seg")
    return folder


def _labels(grid: Any) -> Any:
    """40 labels: random ellipsoids inside the volume, later labels over earlier ones."""
    rng = np.random.default_rng(0)
    array = np.zeros(SHAPE, np.uint8)
    mm = [np.arange(n)[tuple(slice(None) if a == i else None for a in range(3))] * s
          for i, (n, s) in enumerate(zip(SHAPE, SPACING, strict=True))]
    extent = np.array(SHAPE) * np.array(SPACING)
    for value in range(1, N_LABELS + 1):
        radii = rng.uniform(4, 30, 3)
        centre = rng.uniform(radii, extent - radii)
        inside = sum(((m - c) / r) ** 2 for m, c, r in zip(mm, centre, radii, strict=True)) <= 1
        array[inside] = value
    names = {v: f"structure_{v}" for v in range(1, N_LABELS + 1)}
    return grid.with_labels(array, names)


def _best(step: Callable[[int], Any], repeats: int) -> tuple[float, Any]:
    """Best wall-clock time of ``step(run)`` over ``repeats`` runs (each writer run writes a new file)."""
    best, out = float("inf"), None
    for run in range(repeats):
        t0 = time.perf_counter()
        out = step(run)
        best = min(best, time.perf_counter() - t0)
    return best, out


def _peak_mb(step: Callable[[int], Any]) -> float:
    tracemalloc.start()
    try:
        step(REPEATS)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _highdicom_write(series: Path, labels: Any, target: Path) -> None:
    """The same BINARY SEG built and written by highdicom's generic encoder."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from medseg.io.dicom_source import open_series

    src = open_series(series)
    datasets = [plane.ds for plane in src.planes]
    descriptions = [hd.seg.SegmentDescription(v, f"structure_{v}", codes.SCT.Tissue, codes.SCT.Tissue, "MANUAL")
                    for v in range(1, N_LABELS + 1)]
    seg = hd.seg.Segmentation(datasets, np.ascontiguousarray(labels.array.transpose(2, 1, 0)), "BINARY", descriptions,
                              hd.UID(), 1000, hd.UID(), 1, "medseg", "bench", "0", "1", omit_empty_frames=False)
    seg.save_as(target)


def main() -> None:
    import medseg
    from medseg.io.dicom_seg import load_seg, save_seg
    from medseg.io.dicom_source import open_series

    with tempfile.TemporaryDirectory(prefix="medseg-bench-seg-") as tmp:
        root = Path(tmp)
        series = _series(root / "ct")
        src = open_series(series)
        labels = _labels(src.grid)
        medseg.save(labels, root / "labels.nii.gz")
        save_seg(labels, src, root / "binary.dcm")
        save_seg(labels, src, root / "labelmap.dcm", segmentation_type="LABELMAP")
        # writers write a new file each run (replacing a 400 MB file would time its deletion too)
        steps: dict[str, Callable[[int], Any]] = {
            "write .nii.gz (medseg.save)": lambda n: medseg.save(labels, root / f"w{n}.nii.gz"),
            "write SEG BINARY (save_seg)": lambda n: save_seg(labels, src, root / f"w{n}-binary.dcm"),
            "write SEG LABELMAP (save_seg)": lambda n: save_seg(labels, src, root / f"w{n}-labelmap.dcm",
                                                                segmentation_type="LABELMAP"),
            "read .nii.gz (medseg.load)": lambda n: medseg.load(root / "labels.nii.gz"),
            "read SEG BINARY (load_seg)": lambda n: load_seg(root / "binary.dcm", reference=series),
            "read SEG LABELMAP (load_seg)": lambda n: load_seg(root / "labelmap.dcm", reference=series),
        }
        rows = []
        for name, step in steps.items():
            seconds, out = _best(step, REPEATS)
            if name.startswith("read SEG"):
                assert np.array_equal(out.array, labels.array), f"{name}: labels differ"
            rows.append((name, seconds, _peak_mb(step)))
            print(f"{name:34s} {seconds:7.2f} s  peak {rows[-1][2]:7.0f} MB", flush=True)
            for written in root.glob("w*.*"):
                written.unlink()
        hd_seconds, _ = _best(lambda n: _highdicom_write(series, labels, root / "highdicom.dcm"), 1)
        print(f"{'write SEG BINARY (highdicom)':34s} {hd_seconds:7.2f} s", flush=True)
        sizes = {p.name: p.stat().st_size / 2**20 for p in root.glob("*.*") if p.is_file()}

    nifti_write, seg_write = rows[0][1], rows[1][1]
    ratio = seg_write / nifti_write
    table = "\n".join(f"| {n} | {s:.2f} | {m:.0f} |" for n, s, m in rows)
    record("BENCHMARKS.md", "bench_dicom_seg", f"""## DICOM SEG export and import (`python -m benchmarks.bench_dicom_seg`)

A 512x512x300 CT series (uncompressed) and a label map of {N_LABELS} labels on its grid: BINARY SEG
= {N_LABELS * SHAPE[2]} 1-bit frames (empty ones included), LABELMAP SEG = {SHAPE[2]} 8-bit frames. Best of
{REPEATS} runs; peak = tracemalloc peak of one more run (numpy buffers included).

| step | time (s) | peak memory (MB) |
| --- | ---: | ---: |
{table}
| write SEG BINARY (highdicom `Segmentation` + `save_as`, once) | {hd_seconds:.2f} | |

SEG export (BINARY) / NIfTI export: **{ratio:.1f}x** (target <= 3x). Files: labels.nii.gz
{sizes.get('labels.nii.gz', 0):.1f} MB, BINARY SEG {sizes.get('binary.dcm', 0):.0f} MB, LABELMAP SEG
{sizes.get('labelmap.dcm', 0):.0f} MB (both uncompressed Explicit VR Little Endian).""")
    print(f"SEG/NIfTI export ratio {ratio:.2f}x (target <= 3x)")


if __name__ == "__main__":
    main()
