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
    for PNG/JPEG/TIFF inputs, or the format asked for: ``labels.dcm``, a DICOM SEG
    or RTSTRUCT of a DICOM series);
``instances.nii.gz``
    instance map (one integer per connected object) on the same grid, in the same format
    (NIfTI beside a DICOM SEG or RTSTRUCT);
``measurements.csv``
    one row per label and per instance (see :func:`medseg.measure`);
``metrics.csv``
    only with ground truth: the per-label evaluation against it.
"""

from __future__ import annotations

import io
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.batch.cases import Case, input_fingerprint
from medseg.batch.fingerprint import content_fingerprint, file_sha256, json_fingerprint
from medseg.errors import ConfigError, GeometryError, MedsegError, ModelError

CASES_DIR = "cases"
LABELS_STEM = "labels"
INSTANCES_STEM = "instances"
MEASUREMENTS_NAME = "measurements.csv"
METRICS_NAME = "metrics.csv"


_STAGES = ("segment", "postprocess", "measure", "evaluate", "write", "store")
REMOTE_CACHE_DIR = ".dicomweb"  # under the output folder: series retrieved for the case at hand, removed after it


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
    source_files: list[Path] = field(default_factory=list)


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
    stored : bool or None
        With ``--store``: True when the SEG was sent to the PACS, False when the PACS held it already.
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
    stored: bool | None = None

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
class RemoteInput:
    """A DICOMweb server the cases come from: its URL, whether SEGs go back to it, where series are cached, timeout (s)."""

    url: str
    store: bool
    cache_dir: str
    timeout_s: float = 30.0


@dataclass(frozen=True)
class PipelineSpec:
    """What a worker needs to build its :class:`Pipeline` (plain data: pickles to worker processes and Ray actors).

    ``model`` is a segmenter spec (path or ``SCHEME:NAME``) or a picklable Segmenter.
    """

    model: Any
    output_format: str | None = None
    remote: RemoteInput | None = None
    mpp: float | None = None

    def build(self, torch_threads: int | None = None) -> Pipeline:
        """Load the segmenter and return the pipeline."""
        return Pipeline(self.model, torch_threads=torch_threads, output_format=self.output_format, remote=self.remote,
                        mpp=self.mpp)


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
        Label-map format (``nifti``, ``nrrd``, ``mha``, ``png``, ``tiff``, ``seg``/``dicom-seg``,
        ``rtstruct``); by default the input's own raster family for 2D pictures, else NIfTI.
    remote : RemoteInput, optional
        The DICOMweb server ``dicomweb_series`` cases are retrieved from (and SEGs stored to).
    mpp : float, optional
        Micrometres per pixel of 2D pictures and slides, over what their files state (most PNG/JPEG tiles state none).
    """

    def __init__(self, model: Any, *, torch_threads: int | None = None, output_format: str | None = None,
                 remote: RemoteInput | None = None, mpp: float | None = None) -> None:
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        from medseg.segmenters import Segmenter, load_segmenter

        segmenter = load_segmenter(model)
        if not isinstance(segmenter, Segmenter):
            raise ModelError(f"{type(segmenter).__name__} is not a Segmenter (needs name, label_names, spatial_dims, "
                             "in_channels, postprocess, fingerprint() and segment())")
        from medseg.io.formats import format_named

        fmt = format_named(output_format) if output_format is not None else None
        if remote is not None and remote.store and (fmt is None or fmt.name != "dicom"):
            raise ConfigError("storing to the PACS sends DICOM SEGs: use the seg output format")
        self.segmenter = segmenter
        self.output_format = output_format
        self.remote = remote
        self.mpp = mpp
        self._per_thread = threading.local()  # an HTTP session per thread (prefetch and model threads)

    @property
    def pacs(self) -> Any:
        """The :class:`~medseg.pacs.DicomwebPacs` of the remote input, one per thread (connected on first use)."""
        if getattr(self._per_thread, "pacs", None) is None:
            from medseg.pacs import DicomwebPacs

            if self.remote is None:
                raise ConfigError("this batch has no DICOMweb input")
            self._per_thread.pacs = DicomwebPacs(self.remote.url, timeout_s=self.remote.timeout_s)
        return self._per_thread.pacs

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
            **({"mpp": self.mpp} if self.mpp is not None else {}),
            **({"store": True} if self.remote is not None and self.remote.store else {}),
        })

    # ---- stages ------------------------------------------------------------------------------------------------
    def read(self, case: Case) -> LoadedCase:
        """Fingerprint and read one case; errors are returned in the result, never raised."""
        from medseg.io.slide import is_slide_file, open_slide
        from medseg.workflows.segment import load_input

        t0 = time.perf_counter()
        loaded = LoadedCase(case)
        try:
            loaded.stat_fp = input_fingerprint(case)
            files = [Path(f) for f in case.files if f != case.gt]
            if case.kind == "dicomweb_series":
                files = self._retrieve(case)
            if case.kind in ("dicom_series", "dicomweb_series"):
                loaded.image = _load_series(files)
            elif case.kind == "slide" or (case.kind == "raster" and is_slide_file(files[0])):
                loaded.image = open_slide(files[0], mpp=self.mpp)  # lazy: read tile by tile in process()
            else:
                loaded.image = load_input(files[0], self.mpp)
            loaded.source_files = files
            loaded.content_fp = content_fingerprint(case.files or files)  # the bytes are in the page cache now
        except Exception as exc:  # noqa: BLE001 -- any failure of one case is reported, never fatal
            loaded.image, loaded.error_type, loaded.message, loaded.stage = None, type(exc).__name__, _one_line(exc), "read"
        loaded.read_s = time.perf_counter() - t0
        return loaded

    def _retrieve(self, case: Case) -> list[Path]:
        """Retrieve a remote series into the cache (a folder named by the case id, replaced if left over)."""
        import shutil

        if self.remote is None:
            raise ConfigError(f"case {case.case_id} is on a DICOMweb server, but the batch has no DICOMweb input")
        folder = Path(self.remote.cache_dir) / case.case_id
        shutil.rmtree(folder, ignore_errors=True)
        return self.pacs.retrieve_series(case.study_uid, case.series_uid, folder)

    def process(self, loaded: LoadedCase, output_dir: str | os.PathLike[str]) -> CaseOutcome:
        """Segment, post-process, measure (and evaluate) a read case; write its outputs atomically.

        A remote case's retrieved files are removed afterwards, whatever happened.
        """
        try:
            return self._process(loaded, output_dir)
        finally:
            if loaded.case.kind == "dicomweb_series" and self.remote is not None:
                import shutil

                shutil.rmtree(Path(self.remote.cache_dir) / loaded.case.case_id, ignore_errors=True)

    def _process(self, loaded: LoadedCase, output_dir: str | os.PathLike[str]) -> CaseOutcome:
        case = loaded.case
        out = CaseOutcome(case.case_id, ok=False, stat_fp=loaded.stat_fp, content_fp=loaded.content_fp)
        out.timings_s["read"] = loaded.read_s
        if loaded.error_type:
            out.error_type, out.message, out.stage = loaded.error_type, loaded.message, loaded.stage
            return out
        image = loaded.image
        out.warnings = list(getattr(image, "warnings", []))
        try:
            if hasattr(image, "read_region"):  # a whole-slide image
                out.outputs = self._run_slide(image, Path(output_dir), case.case_id, out.timings_s)
                out.ok = True
                return out
            if self.spatial_dims is not None and image.ndim != self.spatial_dims:
                raise GeometryError(
                    f"wrong dimensionality: a {image.ndim}D image for a {self.spatial_dims}D segmenter", case.source
                )
            results, options = self._run_stages(image, case, loaded.source_files, out.timings_s)
            t0 = time.perf_counter()
            out.outputs = self._write(results, Path(output_dir), case.case_id, options)
            out.timings_s["write"] = time.perf_counter() - t0
            if self.remote is not None and self.remote.store:
                from medseg.pacs import store_once

                t0 = time.perf_counter()
                out.stored = store_once(self.pacs, Path(output_dir) / out.outputs[LABELS_STEM]["path"])
                out.timings_s["store"] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 -- MemoryError, OOM and bugs alike: record, go on
            # each stage records its time when done; the first without one failed
            stage = next(s for s in _STAGES if s not in out.timings_s and (s != "evaluate" or case.gt))
            out.error_type, out.message, out.stage = type(exc).__name__, _one_line(exc), stage
            if not isinstance(exc, MedsegError) and case.source not in out.message:
                out.message = f"{case.source}: {out.message}"
            return out
        out.ok = True
        return out

    def _run_stages(self, image: Any, case: Case, source_files: list[Path],
                    timings: dict[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
        """:func:`medseg.workflows.run_case`; returns output file name -> LabelMap or DataFrame, and writer options."""
        from medseg.workflows.case import run_case
        from medseg.workflows.segment import load_input, output_format, save_options

        reference = load_input(case.gt, self.mpp) if case.gt else None
        result = run_case(self.segmenter, image, reference=reference, timings=timings)  # _write adds case_id
        fmt = output_format(case.source, image.ndim, self.output_format)
        # a DICOM SEG or RTSTRUCT holds the semantic labels; the instance map stays a volume beside it
        instances_suffix = ".nii.gz" if fmt.family == "dicom" else fmt.suffixes[0]
        results: dict[str, Any] = {
            f"{LABELS_STEM}{fmt.suffixes[0]}": result.semantic,
            f"{INSTANCES_STEM}{instances_suffix}": result.instances,
            MEASUREMENTS_NAME: result.measurements,
        }
        if result.metrics is not None:
            results[METRICS_NAME] = result.metrics
        return results, save_options(fmt, source_files, self.segmenter)

    def _run_slide(self, slide: Any, output_dir: Path, case_id: str, timings: dict[str, float]) -> dict[str, Any]:
        """:func:`medseg.workflows.slide.segment_slide` into ``cases/<case_id>/``, plus ``measurements.csv``: the
        slide's summary row (cells, tissue area, density, mean features) for the cohort table."""
        import pandas as pd

        from medseg.atomic import write_text_atomic
        from medseg.workflows.slide import segment_slide

        folder = output_dir / CASES_DIR / case_id
        t0 = time.perf_counter()
        try:
            result = segment_slide(self.segmenter, slide, folder)
        finally:
            slide.close()
        timings["segment"] = time.perf_counter() - t0
        summary = result.summary
        row = {"case_id": case_id, "n_cells": summary["n_cells"], "tissue_area_mm2": summary["tissue_area_mm2"],
               "density_per_mm2": summary["density_per_mm2"],
               **{f"mean_{k}": v["mean"] for k, v in summary["features"].items()}}
        buf = io.StringIO()
        pd.DataFrame([row]).to_csv(buf, index=False)
        paths = {**result.outputs, "measurements": write_text_atomic(folder / MEASUREMENTS_NAME, buf.getvalue())}
        timings["write"] = time.perf_counter() - t0 - timings["segment"]
        return {name: {"path": p.relative_to(output_dir).as_posix(), "bytes": p.stat().st_size,
                       "sha256": file_sha256(p)} for name, p in paths.items()}

    def _write(self, results: dict[str, Any], output_dir: Path, case_id: str,
               options: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Write every result under ``cases/<case_id>/`` atomically; drop outputs of earlier runs not written now.

        ``options`` go to the writer of the label map (a DICOM SEG's source series and model).
        """
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
                save(value, path, **(options if name.startswith(LABELS_STEM) else {}))
            outputs[name.split(".")[0]] = {
                "path": path.relative_to(output_dir).as_posix(),
                "bytes": path.stat().st_size,
                "sha256": file_sha256(path),
            }
        for p in folder.iterdir():
            if p.name not in results:
                p.unlink(missing_ok=True)
        return outputs
