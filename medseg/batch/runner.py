"""``run_batch``: discovery -> plan (resume) -> executor -> manifest -> cohort outputs.

Output folder layout::

    OUTPUT_DIR/
      cases/<case_id>/labels.nii.gz, instances.nii.gz, measurements.csv[, metrics.csv]
      measurements.csv   all cases' measurement rows (cohort table)
      metrics.csv        with ground truth: all cases' metric rows
      summary.json       counts, times, model and pipeline fingerprints, per-case status
      failures.csv       case_id, source, error_type, stage, message (header only when none failed)
      .dicomweb/         a DICOMweb input's series while its case is processed (removed after each case)
      case_sources.csv   case_id -> source path (keep local: sources can name patients)
      manifest.jsonl     finished cases with their input and pipeline fingerprints

Only the runner writes the manifest and the cohort files; workers write only
inside their case's folder. A lock file keeps two runs off one output folder.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medseg.atomic import write_text_atomic
from medseg.batch.cases import Case, Discovery, discover_cases, discover_dicomweb, input_fingerprint, write_case_sources
from medseg.batch.events import EventLog
from medseg.batch.fingerprint import content_fingerprint
from medseg.batch.manifest import CaseRecord, Manifest
from medseg.batch.pipeline import (
    CASES_DIR,
    MEASUREMENTS_NAME,
    METRICS_NAME,
    REMOTE_CACHE_DIR,
    CaseOutcome,
    Pipeline,
    PipelineSpec,
    RemoteInput,
    remove_stale_temporaries,
)
from medseg.errors import ConfigError, ReadError, WriteError

EXIT_OK = 0
"""Exit code: every case is done (processed now or up to date)."""
EXIT_SOME_FAILED = 3
"""Exit code: the batch ran to the end but at least one case failed (see ``failures.csv``)."""

FAILURES_NAME = "failures.csv"
SUMMARY_NAME = "summary.json"
REPORT_DIR = "report"
_LOCK_NAME = ".medseg-batch.lock"
_FAILURE_FIELDS = ["case_id", "source", "error_type", "stage", "message"]


@dataclass
class PlannedCase:
    """A discovered case and what this run does with it (``todo`` with a reason, or up to date)."""

    case: Case
    todo: bool
    reason: str


@dataclass
class BatchResult:
    """What a batch run did.

    Attributes
    ----------
    output_dir : Path
    plan : list of PlannedCase
        Every discovered case with its decision (the whole result of a dry run).
    done : list of str
        Case ids processed successfully in this run.
    up_to_date : list of str
        Case ids skipped because their outputs were current.
    failures : list of dict
        One row per failed case (the rows of ``failures.csv``).
    stored : list of str
        Case ids whose SEG this run sent to the PACS (``store=True``; a SEG the PACS held already is not sent).
    seconds : float
        Wall time of the run, s.
    dry_run : bool
    """

    output_dir: Path
    plan: list[PlannedCase]
    done: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        """:data:`EXIT_OK` (0) when no case failed, else :data:`EXIT_SOME_FAILED` (3)."""
        return EXIT_SOME_FAILED if self.failures else EXIT_OK


@contextmanager
def _exclusive(output_dir: Path) -> Iterator[None]:
    """Hold an advisory lock on the output folder (released by the OS even on SIGKILL)."""
    with open(output_dir / _LOCK_NAME, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError("another medseg batch is writing to this output folder", output_dir) from None
        yield


def _plan(cases: Sequence[Case], manifest: Manifest, pipeline_fp: str, output_dir: Path, *,
          force: bool, verify_inputs: bool) -> tuple[list[PlannedCase], list[CaseRecord]]:
    """Decide per case: redo (with the reason) or skip; returns the plan and manifest records to refresh."""
    plan: list[PlannedCase] = []
    refreshed: list[CaseRecord] = []
    for case in cases:
        rec = manifest.get(case.case_id)
        if force:
            plan.append(PlannedCase(case, True, "forced"))
        elif rec is None:
            plan.append(PlannedCase(case, True, "new"))
        elif rec.pipeline_fp != pipeline_fp:
            plan.append(PlannedCase(case, True, "model or config changed"))
        elif not rec.outputs_intact(output_dir):
            plan.append(PlannedCase(case, True, "outputs missing"))
        elif case.remote_fp:  # a remote series: the same SOP instances are the same input
            same = rec.stat_fp == case.remote_fp
            plan.append(PlannedCase(case, not same, "up to date" if same else "input changed"))
        else:
            try:
                stat_fp = input_fingerprint(case)
                same = rec.stat_fp == stat_fp and not verify_inputs
                if not same and content_fingerprint(case.files) == rec.content_fp:
                    same = True
                    if rec.stat_fp != stat_fp:  # touched or copied, same bytes: remember the new stat
                        refreshed.append(CaseRecord(**{**rec.__dict__, "stat_fp": stat_fp}))
            except OSError:
                same = False
            plan.append(PlannedCase(case, not same, "up to date" if same else "input changed"))
    return plan, refreshed


def _record(outcome: CaseOutcome, pipeline_fp: str) -> CaseRecord:
    return CaseRecord(
        case_id=outcome.case_id, stat_fp=outcome.stat_fp, content_fp=outcome.content_fp, pipeline_fp=pipeline_fp,
        outputs=outcome.outputs, seconds=round(outcome.seconds, 3),
        finished_utc=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def _cohort_table(output_dir: Path, records: Sequence[CaseRecord], output: str) -> bool:
    """Concatenate the per-case tables named ``output`` into ``OUTPUT_DIR/<output>``; drop a stale one if none.

    Returns True when the cohort table was written.
    """
    import pandas as pd

    key = output.split(".")[0]
    frames = [pd.read_csv(output_dir / r.outputs[key]["path"]) for r in records if key in r.outputs]
    target = output_dir / output
    if not frames:
        target.unlink(missing_ok=True)
        return False
    buf = io.StringIO()
    pd.concat(frames, ignore_index=True).to_csv(buf, index=False)
    write_text_atomic(target, buf.getvalue())
    return True


def _write_report(out: Path, current: Sequence[CaseRecord], failures: Sequence[dict[str, str]],
                  cases: dict[str, Case], pipeline: Pipeline) -> None:
    """The evaluation report (``OUTPUT_DIR/report/report.html``) over the cases that have ground truth."""
    import pandas as pd

    from medseg.metrics.cohort import CaseRecord as ReportCase
    from medseg.report import write_report

    per_case = pd.read_csv(out / METRICS_NAME).rename(columns={"case_id": "case"})
    evaluated = [ReportCase(r.case_id, str(out / r.outputs["labels"]["path"]), cases[r.case_id].gt or "")
                 for r in current if "metrics" in r.outputs]
    failed = [ReportCase(f["case_id"], "", cases[f["case_id"]].gt or "", status="failed",
                         error=f"{f['error_type']}: {f['message']}") for f in failures if cases[f["case_id"]].gt]
    write_report(per_case, out / REPORT_DIR, evaluated + failed,
                 title=f"medseg batch: {pipeline.segmenter.name}")


def _make_executor(pipeline: Pipeline, spec: PipelineSpec, executor: str, workers: int, address: str | None,
                   gpus_per_worker: float, case_timeout_s: float | None) -> Any:
    from medseg.batch.executors import LocalExecutor, RayExecutor

    if executor == "local":
        if address or gpus_per_worker:
            raise ConfigError("--address and --gpus-per-worker apply to --executor ray only")
        return LocalExecutor(pipeline, spec, workers, case_timeout_s=case_timeout_s)
    if executor == "ray":
        if case_timeout_s is not None:
            raise ConfigError("--case-timeout applies to --executor local only")
        return RayExecutor(spec, workers, address=address, gpus_per_worker=gpus_per_worker)
    raise ConfigError(f"unknown executor {executor!r}; choose local or ray")


def _remote_input(input_dir: str | os.PathLike[str], out: Path, store: bool, timeout_s: float) -> RemoteInput | None:
    """The DICOMweb server of a ``dicomweb://`` input (None for a local folder)."""
    from medseg.pacs import DicomwebQuery, is_dicomweb

    if is_dicomweb(input_dir):
        return RemoteInput(DicomwebQuery.parse(str(input_dir)).url, store, str(out / REMOTE_CACHE_DIR), timeout_s)
    if store:
        raise ConfigError("--store sends SEGs back to a PACS: the input must be a dicomweb:// address")
    return None


def _discover(input_dir: str | os.PathLike[str], out: Path, pipeline: Pipeline, *, gt_dir: Any,
              exclude: Sequence[str], id_style: str) -> Discovery:
    """The cases of a local folder, or of a ``dicomweb://`` query (one per image series it finds)."""
    if pipeline.remote is not None:
        from medseg.pacs import DicomwebQuery

        if gt_dir is not None:
            raise ConfigError("--gt applies to local inputs only")
        return discover_dicomweb(DicomwebQuery.parse(str(input_dir)), pipeline.pacs)
    input_root = Path(input_dir).resolve()
    if not input_root.is_dir():
        raise ReadError("input folder not found", input_root)
    return discover_cases(input_root, spatial_dims=pipeline.spatial_dims, exclude=exclude, skip_dirs=[out],
                          gt_dir=gt_dir, id_style=id_style)


def run_batch(
    model: Any,
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    gt_dir: str | os.PathLike[str] | None = None,
    workers: int = 1,
    executor: str = "local",
    address: str | None = None,
    gpus_per_worker: float = 0.0,
    force: bool = False,
    verify_inputs: bool = False,
    dry_run: bool = False,
    exclude: Sequence[str] = (),
    id_style: str = "hash",
    log_json: str | os.PathLike[str] | None = None,
    quiet: bool = True,
    output_format: str | None = None,
    case_timeout_s: float | None = None,
    store: bool = False,
    pacs_timeout_s: float = 30.0,
    mpp: float | None = None,
) -> BatchResult:
    """Segment, post-process, measure (and evaluate) every case under ``input_dir``; resumable.

    Parameters
    ----------
    model : Segmenter, str or path-like
        Any segmenter or a spec :func:`medseg.load_segmenter` resolves (model
        directory, MONAI bundle, ``SCHEME:NAME``).
    input_dir, output_dir : path-like
        Where the scans are (searched recursively) and where results go. ``input_dir`` may be a
        DICOMweb query, ``dicomweb://HOST[:PORT]/PATH?StudyInstanceUID=...&Modality=CT`` (``dicomwebs://``
        for HTTPS): every image series it finds is retrieved (WADO-RS), processed and removed again.
    gt_dir : path-like, optional
        Ground-truth label maps, matched to cases by relative path or case id
        (see :func:`medseg.batch.discover_cases`); adds ``metrics.csv``.
    workers : int
        Parallel workers (local: threads/processes; Ray: actors).
    executor : {"local", "ray"}
    address : str, optional
        Ray cluster address; None starts a local Ray instance.
    gpus_per_worker : float
        GPUs per Ray actor.
    force : bool
        Redo every case, even those up to date.
    verify_inputs : bool
        Compare input contents (SHA-256), not only sizes and mtimes, before skipping a case.
    dry_run : bool
        Discover and plan only; nothing is written.
    exclude : sequence of str
        Glob patterns of input paths to leave out.
    id_style : {"hash", "path"}
        Case ids from hashes (default, no names) or from relative paths.
    log_json : path-like, optional
        JSON-lines event log (see :mod:`medseg.batch.events`).
    output_format : str, optional
        Label-map format (``nifti``, ``nrrd``, ``mha``, ``png``, ``tiff``, ``seg``/``dicom-seg``: a DICOM SEG,
        ``rtstruct``); default: the input's own family for PNG/JPEG/TIFF inputs, else NIfTI (``seg`` with ``store``).
    case_timeout_s : float, optional
        Seconds a case may hold its worker (reading included) before it is stopped and recorded
        in ``failures.csv`` as ``CaseTimeout`` (local executor).
    quiet : bool
        No progress bar.
    store : bool
        DICOMweb input: send each case's SEG back to the server (STOW-RS), unless it holds that SOP
        instance already (SEG UIDs are deterministic, so a re-run stores nothing twice); a refused or
        failed store fails the case.
    pacs_timeout_s : float
        Seconds to wait for each answer of the DICOMweb server.
    mpp : float, optional
        Micrometres per pixel of 2D pictures and slides, over what their files state (part of the fingerprint).

    Returns
    -------
    BatchResult
        Its ``exit_code`` is 0 when no case failed, 3 otherwise.

    Raises
    ------
    medseg.errors.MedsegError
        For problems with the run itself (no input folder, no cases, a model
        that does not load, an output folder in use), never for a bad case.
    """
    t_run = time.perf_counter()
    out = Path(output_dir).resolve()
    if out.exists() and not out.is_dir():
        raise WriteError("is a file, but the batch output is a folder", out)
    if store and output_format is None:
        output_format = "seg"
    spec = PipelineSpec(model, output_format, _remote_input(input_dir, out, store, pacs_timeout_s), mpp)
    pipeline = spec.build()  # a bad model or format fails before any input is looked at
    pipeline_fp = pipeline.fingerprint
    discovery = _discover(input_dir, out, pipeline, gt_dir=gt_dir, exclude=exclude, id_style=id_style)
    if not discovery.cases:
        raise ReadError("no scans found (DICOM series, NIfTI/NRRD/MHA files, or 2D images for 2D workflows)",
                        discovery.input_dir)
    if dry_run:
        manifest = Manifest(out)  # read-only use: nothing is written in a dry run
        plan, _ = _plan(discovery.cases, manifest, pipeline_fp, out, force=force, verify_inputs=verify_inputs)
        return BatchResult(out, plan, dry_run=True, seconds=time.perf_counter() - t_run)

    engine = _make_executor(pipeline, spec, executor, workers, address, gpus_per_worker, case_timeout_s)
    out.mkdir(parents=True, exist_ok=True)
    events = EventLog(log_json, quiet=quiet)
    try:
        with _exclusive(out):
            return _run(pipeline, discovery, out, engine, events, force=force, verify_inputs=verify_inputs, t_run=t_run)
    finally:
        events.close()


def _run(pipeline: Pipeline, discovery: Discovery, out: Path, engine: Any, events: EventLog, *,
         force: bool, verify_inputs: bool, t_run: float) -> BatchResult:
    """The batch proper, under the output folder's lock."""
    cases, pipeline_fp = discovery.cases, pipeline.fingerprint
    write_case_sources(out, discovery)
    for folder in [out, *(out / CASES_DIR).glob("*")]:  # we hold the lock: temporaries are a killed run's leftovers
        remove_stale_temporaries(folder)
    shutil.rmtree(out / REMOTE_CACHE_DIR, ignore_errors=True)  # series a killed run retrieved
    manifest = Manifest(out)
    plan, refreshed = _plan(cases, manifest, pipeline_fp, out, force=force, verify_inputs=verify_inputs)
    for rec in refreshed:
        manifest.append(rec)
    result = BatchResult(out, plan)
    todo = [p.case for p in plan if p.todo]
    events.emit("run_start", n_cases=len(cases), n_todo=len(todo), n_up_to_date=len(cases) - len(todo),
                executor=engine.name, workers=engine.workers, pipeline_fp=pipeline_fp)
    for p in plan:
        if not p.todo:
            result.up_to_date.append(p.case.case_id)
            events.emit("case_skipped", case_id=p.case.case_id, reason=p.reason)

    by_id = {c.case_id: c for c in cases}
    for ev in engine.run(todo, str(out)):
        kind = ev["event"]
        if kind != "case_end":
            events.emit(kind, **{k: v for k, v in ev.items() if k != "event"})
            continue
        o: CaseOutcome = ev["outcome"]
        timings = {k: round(v, 3) for k, v in o.timings_s.items()}
        if o.ok:
            manifest.append(_record(o, pipeline_fp))  # outputs are complete on disk before this line
            result.done.append(o.case_id)
            if o.stored:
                result.stored.append(o.case_id)
            events.emit("case_done", case_id=o.case_id, seconds=round(o.seconds, 3), timings_s=timings,
                        warnings=o.warnings, **({} if o.stored is None else {"stored": o.stored}))
        else:
            result.failures.append({"case_id": o.case_id, "source": by_id[o.case_id].source,
                                    "error_type": o.error_type, "stage": o.stage, "message": o.message})
            events.emit("case_failed", case_id=o.case_id, seconds=round(o.seconds, 3), error_type=o.error_type,
                        stage=o.stage, message=o.message)
            _write_csv(out / FAILURES_NAME, result.failures, _FAILURE_FIELDS)

    manifest.compact()
    failed = {f["case_id"] for f in result.failures}
    current = [r for c in cases if (r := manifest.get(c.case_id)) and c.case_id not in failed
               and r.pipeline_fp == pipeline_fp]
    _write_csv(out / FAILURES_NAME, result.failures, _FAILURE_FIELDS)
    _cohort_table(out, current, MEASUREMENTS_NAME)
    if _cohort_table(out, current, METRICS_NAME):
        _write_report(out, current, result.failures, {c.case_id: c for c in cases}, pipeline)
    result.seconds = time.perf_counter() - t_run
    _write_summary(out, pipeline, pipeline_fp, result, current, engine)
    events.emit("run_end", n_done=len(result.done), n_up_to_date=len(result.up_to_date),
                n_failed=len(result.failures), seconds=round(result.seconds, 3), exit_code=result.exit_code)
    return result


def _write_summary(out: Path, pipeline: Pipeline, pipeline_fp: str, result: BatchResult,
                   current: Sequence[CaseRecord], engine: Any) -> None:
    from medseg import __version__

    failed = {f["case_id"]: f for f in result.failures}
    summary = {
        "medseg_version": __version__,
        "model": {"name": pipeline.segmenter.name, "fingerprint": str(pipeline.segmenter.fingerprint())},
        "pipeline_fp": pipeline_fp,
        "executor": engine.name,
        "workers": engine.workers,
        "n_cases": len(result.plan),
        "n_ok": len(current),
        "n_failed": len(result.failures),
        "n_processed_this_run": len(result.done),
        "n_up_to_date": len(result.up_to_date),
        "n_stored_this_run": len(result.stored),
        "run_seconds": round(result.seconds, 3),
        "exit_code": result.exit_code,
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "cases": [
            {"case_id": p.case.case_id, "kind": p.case.kind,
             "status": "failed" if p.case.case_id in failed else ("processed" if p.todo else "up to date"),
             **({"error_type": failed[p.case.case_id]["error_type"]} if p.case.case_id in failed else {})}
            for p in result.plan
        ],
    }
    write_text_atomic(out / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
