"""The per-case pipeline: read -> segment -> post-process -> measure -> evaluate -> write.

:class:`Pipeline` is built once per worker (the model is loaded once) and then
applied to case after case. Reading (:meth:`Pipeline.read`) is separate from
the model work (:meth:`Pipeline.process`) so an executor can read and decode
the next case in a prefetch thread while the model works on the current one.
Neither method raises for a bad case: the error becomes a failed
:class:`CaseOutcome`, so one broken scan never stops a batch.

Outputs of a case, all under ``<output>/cases/<case_id>/`` and each written
under a temporary name and renamed:

``labels.nii.gz``
    semantic label map on the input's exact grid (``labels.png`` / ``labels.tif``
    for PNG/JPEG/TIFF inputs, or the format asked for);
``instances.nii.gz``
    instance map (one integer per connected object) on the same grid, in the same format;
``measurements.csv``
    one row per label and per instance (see :func:`medseg.measure`);
``metrics.csv``
    only with ground truth: the per-label evaluation against it.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.batch.cases import Case
from medseg.batch.fingerprint import content_fingerprint, file_sha256, json_fingerprint, stat_fingerprint
from medseg.errors import GeometryError, MedsegError, ModelError

CASES_DIR = "cases"
LABELS_STEM = "labels"
INSTANCES_STEM = "instances"
MEASUREMENTS_NAME = "measurements.csv"
METRICS_NAME = "metrics.csv"


_STAGES = ("segment", "postprocess", "measure", "evaluate", "write")


@dataclass
class LoadedCase:
    """A case after reading: its image (or the read error) and its input fingerprints."""

    case: Case
    image: Any = None
    stat_fp: str = ""
    content_fp: str = ""
    read_s: float = 0.0
    error_type: str = ""
    message: str = ""
    stage: str = ""


@dataclass
class CaseOutcome:
    """What a worker reports back about one case (plain data: crosses process and Ray boundaries).

    Attributes
    ----------
    case_id : str
    ok : bool
    stat_fp, content_fp : str
        Input fingerprints (empty when the inputs could not be read).
    outputs : dict
        Output name -> ``{"path", "bytes", "sha256"}``; paths relative to the output folder.
    timings_s : dict
        Seconds per stage (``read``, ``segment``, ``postprocess``, ``measure``, ``evaluate``, ``write``).
    error_type, message, stage : str
        For a failed case: exception class, one-line reason, and the stage that failed.
    warnings : list of str
        Reader warnings about the input (geometry, decoding).
    """

    case_id: str
    ok: bool
    stat_fp: str = ""
    content_fp: str = ""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    error_type: str = ""
    message: str = ""
    stage: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Total wall time of the case, s."""
        return float(sum(self.timings_s.values()))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files left by a writer that was killed (``.<name>.tmp-*``, see :mod:`medseg.atomic`)."""
    if folder.is_dir():
        for p in folder.glob(".*.tmp-*"):
            p.unlink(missing_ok=True)


def _load_series(files: list[Path]) -> Any:
    """Load the DICOM series made of exactly ``files`` (robust to missing or split SeriesInstanceUIDs)."""
    from medseg.errors import SeriesError
    from medseg.io import find_series
    from medseg.io.dicom import load_dicom

    folder = Path(os.path.commonpath([str(f.parent) for f in files]))
    wanted = {f.resolve() for f in files}
    for info in find_series(folder):
        if {Path(f).resolve() for f in info.files} == wanted:
            return load_dicom(folder, series=info.index)
    raise SeriesError("the series changed since it was discovered; run the batch again", folder)


@dataclass(frozen=True)
class PipelineSpec:
    """What a worker needs to build its :class:`Pipeline` (plain data: pickles to worker processes and Ray actors).

    ``model`` is a segmenter spec (path or ``SCHEME:NAME``) or a picklable Segmenter.
    """

    model: Any
    output_format: str | None = None

    def build(self, torch_threads: int | None = None) -> Pipeline:
        """Load the segmenter and return the pipeline."""
        return Pipeline(self.model, torch_threads=torch_threads, output_format=self.output_format)


class Pipeline:
    """A Segmenter and the per-case pipeline (:func:`medseg.workflows.run_case`), applied case by case.

    Parameters
    ----------
    model : Segmenter, str or path-like
        A Segmenter, or a spec :func:`medseg.load_segmenter` resolves (model
        directory, MONAI bundle, ``SCHEME:NAME``); resolved once per worker.
    torch_threads : int, optional
        Intra-op threads for torch in this worker (set by executors running
        several workers on one machine so they do not oversubscribe the CPU).
    output_format : str, optional
        Label-map format (``nifti``, ``nrrd``, ``mha``, ``png``, ``tiff``); by
        default the input's own raster family for 2D pictures, else NIfTI.
    """

    def __init__(self, model: Any, *, torch_threads: int | None = None, output_format: str | None = None) -> None:
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        from medseg.segmenters import Segmenter, load_segmenter

        segmenter = load_segmenter(model)
        if not isinstance(segmenter, Segmenter):
            raise ModelError(f"{type(segmenter).__name__} is not a Segmenter (needs name, label_names, spatial_dims, "
                             "in_channels, postprocess, fingerprint() and segment())")
        if output_format is not None:
            from medseg.io.formats import format_named

            format_named(output_format)
        self.segmenter = segmenter
        self.output_format = output_format

    # ---- identity --------------------------------------------------------------------------------------------
    @property
    def spatial_dims(self) -> int | None:
        """2 or 3: the dimensionality of the images the segmenter takes (None: both)."""
        return self.segmenter.spatial_dims

    @property
    def fingerprint(self) -> str:
        """Hash of the segmenter and every setting that changes the outputs (rules, output format, medseg version)."""
        from medseg import __version__

        return json_fingerprint({
            "segmenter": str(self.segmenter.fingerprint()),
            "postprocess": self.segmenter.postprocess,
            "output_format": self.output_format,
            "medseg": __version__,
        })

    # ---- stages ------------------------------------------------------------------------------------------------
    def read(self, case: Case) -> LoadedCase:
        """Fingerprint and read one case; errors are returned in the result, never raised."""
        from medseg.io import load

        t0 = time.perf_counter()
        loaded = LoadedCase(case)
        try:
            loaded.stat_fp = stat_fingerprint(case.files)
            files = [Path(f) for f in case.files if f != case.gt]
            if case.kind == "dicom_series":
                loaded.image = _load_series(files)
            else:
                loaded.image = load(files[0])
            loaded.content_fp = content_fingerprint(case.files)  # the bytes are in the page cache now
        except Exception as exc:  # noqa: BLE001 -- any failure of one case is reported, never fatal
            loaded.image, loaded.error_type, loaded.message, loaded.stage = None, type(exc).__name__, _one_line(exc), "read"
        loaded.read_s = time.perf_counter() - t0
        return loaded

    def process(self, loaded: LoadedCase, output_dir: str | os.PathLike[str]) -> CaseOutcome:
        """Segment, post-process, measure (and evaluate) a read case; write its outputs atomically."""
        case = loaded.case
        out = CaseOutcome(case.case_id, ok=False, stat_fp=loaded.stat_fp, content_fp=loaded.content_fp)
        out.timings_s["read"] = loaded.read_s
        if loaded.error_type:
            out.error_type, out.message, out.stage = loaded.error_type, loaded.message, loaded.stage
            return out
        image = loaded.image
        out.warnings = list(getattr(image, "warnings", []))
        try:
            if self.spatial_dims is not None and image.ndim != self.spatial_dims:
                raise GeometryError(
                    f"wrong dimensionality: a {image.ndim}D image for a {self.spatial_dims}D segmenter", case.source
                )
            results = self._run_stages(image, case, out.timings_s)
            t0 = time.perf_counter()
            out.outputs = self._write(results, Path(output_dir), case.case_id)
            out.timings_s["write"] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 -- MemoryError, OOM and bugs alike: record, go on
            # each stage records its time when done; the first without one failed
            stage = next(s for s in _STAGES if s not in out.timings_s and (s != "evaluate" or case.gt))
            out.error_type, out.message, out.stage = type(exc).__name__, _one_line(exc), stage
            if not isinstance(exc, MedsegError) and case.source not in out.message:
                out.message = f"{case.source}: {out.message}"
            return out
        out.ok = True
        return out

    def _run_stages(self, image: Any, case: Case, timings: dict[str, float]) -> dict[str, Any]:
        """:func:`medseg.workflows.run_case`; returns output file name -> LabelMap or DataFrame."""
        from medseg.io import load
        from medseg.workflows.case import run_case
        from medseg.workflows.segment import output_format

        reference = load(case.gt) if case.gt else None
        result = run_case(self.segmenter, image, reference=reference, timings=timings)  # _write adds case_id
        suffix = output_format(case.source, image.ndim, self.output_format).suffixes[0]
        results: dict[str, Any] = {
            f"{LABELS_STEM}{suffix}": result.semantic,
            f"{INSTANCES_STEM}{suffix}": result.instances,
            MEASUREMENTS_NAME: result.measurements,
        }
        if result.metrics is not None:
            results[METRICS_NAME] = result.metrics
        return results

    def _write(self, results: dict[str, Any], output_dir: Path, case_id: str) -> dict[str, dict[str, Any]]:
        """Write every result under ``cases/<case_id>/`` atomically; drop outputs of earlier runs not written now."""
        from medseg.atomic import write_text_atomic
        from medseg.io import save

        folder = output_dir / CASES_DIR / case_id
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder)
        outputs: dict[str, dict[str, Any]] = {}
        for name, value in results.items():
            path = folder / name
            if name.endswith(".csv"):
                buf = io.StringIO()
                value.insert(0, "case_id", case_id)
                value.to_csv(buf, index=False)
                write_text_atomic(path, buf.getvalue())
            else:
                save(value, path)
            outputs[name.split(".")[0]] = {
                "path": path.relative_to(output_dir).as_posix(),
                "bytes": path.stat().st_size,
                "sha256": file_sha256(path),
            }
        for p in folder.iterdir():
            if p.name not in results:
                p.unlink(missing_ok=True)
        return outputs
