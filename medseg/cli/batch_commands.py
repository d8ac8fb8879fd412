"""``medseg batch``: one model over a folder tree of scans, resumable, failure-isolated, local or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def batch(
    model: Annotated[str, typer.Argument(metavar="SEGMENTER", help="Model directory (model_card.json + weights), "
                                                                  "MONAI bundle folder, or a registered segmenter "
                                                                  "spec SCHEME:NAME.")],
    input_dir: Annotated[str, typer.Argument(metavar="INPUT", help="Folder searched recursively for DICOM series, "
                                                "NIfTI/NRRD/MHA files and (2D workflows) 2D images; or a DICOMweb "
                                                "query dicomweb://HOST[:PORT]/PATH?StudyInstanceUID=...&Modality=CT "
                                                "(dicomwebs:// for HTTPS).")],
    output_dir: Annotated[Path, typer.Argument(help="Results: cases/<case_id>/..., measurements.csv, summary.json, "
                                                    "failures.csv, manifest.jsonl.")],
    gt: Annotated[Path | None, typer.Option("--gt", help="Ground-truth label maps (same relative path, or "
                                                         "<case_id>.nii.gz); adds metrics.csv and report/.")] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", min=1,
                                         help="Parallel workers (local processes or Ray actors).")] = 1,
    executor: Annotated[str, typer.Option("--executor", help="local or ray.")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address (auto, HOST:6379, "
                                                                  "ray://HOST:10001); default: a local Ray instance.")] = None,
    gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", min=0.0, help="GPUs per Ray actor.")] = 0.0,
    force: Annotated[bool, typer.Option("--force", help="Redo every case, also those up to date.")] = False,
    verify_inputs: Annotated[bool, typer.Option("--verify-inputs", help="Compare input contents (SHA-256), not only "
                                                                        "sizes and times, before skipping a case.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cases and what would be done; write nothing.")] = False,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Glob of input paths to leave out "
                                                                        "(repeatable).")] = None,
    readable_ids: Annotated[bool, typer.Option("--readable-ids", help="Case ids from relative paths instead of hashes "
                                                                      "(may expose names in folder names).")] = False,
    log_json: Annotated[Path | None, typer.Option("--log-json", help="Write machine-readable events, one JSON "
                                                                     "object per line.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
    output_format: Annotated[str | None, typer.Option("--format", "--output-format", help="Label-map format: nifti, nrrd, mha, png, "
                                                                       "tiff, seg (dicom-seg: a DICOM SEG of a DICOM "
                                                                       "series) or rtstruct (default: png/tif for "
                                                                       "PNG/JPEG/TIFF inputs, seg with --store, else "
                                                                       "nifti).")] = None,
    case_timeout: Annotated[float | None, typer.Option("--case-timeout", help="Seconds a case may take (reading "
                                                                              "included) before its worker is "
                                                                              "stopped and the case recorded in "
                                                                              "failures.csv.")] = None,
    store: Annotated[bool, typer.Option("--store", help="DICOMweb input: send each case's SEG back to the server "
                                                        "(STOW-RS); SEGs it holds already are not sent again.")] = False,
    pacs_timeout: Annotated[float, typer.Option("--pacs-timeout", min=0.1, help="Seconds to wait for each answer of "
                                                                                "a DICOMweb server.")] = 30.0,
    mpp: Annotated[float | None, typer.Option("--mpp", help="Micrometres per pixel of 2D pictures and slides "
                                                            "(over what the files state; PNG/JPEG tiles "
                                                            "mostly state none).")] = None,
) -> None:
    """Segment, post-process and measure every scan under INPUT_DIR; re-running resumes.

    Exit codes: 0 all cases done; 3 some cases failed (listed in failures.csv);
    2 the run could not start (bad model, input or options).
    """
    from rich.console import Console

    from medseg.batch import run_batch

    console = Console(stderr=True, highlight=False)
    result = run_batch(
        model, input_dir, output_dir, gt_dir=gt, workers=workers, executor=executor, address=address,
        gpus_per_worker=gpus_per_worker, force=force, verify_inputs=verify_inputs, dry_run=dry_run,
        exclude=exclude or (), id_style="path" if readable_ids else "hash", log_json=log_json, quiet=quiet or dry_run,
        output_format=output_format, case_timeout_s=case_timeout, store=store, pacs_timeout_s=pacs_timeout, mpp=mpp,
    )
    if dry_run:
        out = Console(highlight=False)
        for p in result.plan:
            action = f"process ({p.reason})" if p.todo else "skip (up to date)"
            out.print(f"{p.case.case_id}\t{p.case.kind}\t{p.case.source}\t{action}", soft_wrap=True)
        n_todo = sum(p.todo for p in result.plan)
        out.print(f"{len(result.plan)} cases: {n_todo} to process, {len(result.plan) - n_todo} up to date (dry run)")
        return
    if not quiet:
        stored = f", {len(result.stored)} SEGs stored" if store else ""
        console.print(
            f"{len(result.done)} processed, {len(result.up_to_date)} up to date, {len(result.failures)} failed{stored} "
            f"in {result.seconds:.1f} s -> {result.output_dir}"
        )
        for f in result.failures:
            console.print(f"[red]failed[/red] {f['case_id']} ({f['error_type']}): {f['message']}", soft_wrap=True)
    raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    """Add ``medseg batch`` to the CLI."""
    app.command("batch")(batch)
