"""Batch processing over scan folders: discovery, resumable runs, failure isolation, local or Ray workers.

::

    from medseg.batch import run_batch
    result = run_batch("models/ct_organs", "scans/", "results/", workers=2)
    result.exit_code        # 0: all cases done; 3: some failed (see results/failures.csv)

The command line is ``medseg batch MODEL INPUT_DIR OUTPUT_DIR`` (see docs/BATCH.md).

Modules: :mod:`~medseg.batch.cases` (discovery, case ids), :mod:`~medseg.batch.fingerprint`,
:mod:`~medseg.batch.manifest` (resume), :mod:`~medseg.batch.pipeline` (the per-case work),
:mod:`~medseg.batch.executors` (local, Ray), :mod:`~medseg.batch.events` (progress, JSON log),
:mod:`~medseg.batch.runner` (:func:`run_batch`).
"""

from __future__ import annotations

from medseg.batch.cases import Case, Discovery, discover_cases
from medseg.batch.manifest import CaseRecord, Manifest
from medseg.batch.pipeline import CaseOutcome, Pipeline
from medseg.batch.runner import EXIT_OK, EXIT_SOME_FAILED, BatchResult, PlannedCase, run_batch

__all__ = [
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "BatchResult",
    "Case",
    "CaseOutcome",
    "CaseRecord",
    "Discovery",
    "Manifest",
    "Pipeline",
    "PlannedCase",
    "discover_cases",
    "run_batch",
]
