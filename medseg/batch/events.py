"""Batch events: a JSON-lines log for machines and a rich progress bar for people.

Every event is one JSON object per line in the ``--log-json`` file, with the
UTC time and the event name:

``run_start``      n_cases, n_todo, n_up_to_date, executor, workers, pipeline_fp
``case_skipped``   case_id, reason (``"up to date"``)
``worker_ready``   worker, load_s (model load time; Ray: also ray_init_s)
``case_start``     case_id, worker -- model work on the case begins
``case_done``      case_id, seconds, timings_s (per stage)
``case_failed``    case_id, error_type, stage, message
``run_end``        n_done, n_up_to_date, n_failed, seconds, exit_code

A run that does no model work therefore logs no ``case_start`` at all.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from medseg.errors import WriteError


def _open_log(path: Path) -> TextIO:
    """``path`` opened for line-buffered writing, its folder created; :class:`WriteError` when impossible."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "w", buffering=1, encoding="utf-8")
    except OSError as exc:
        raise WriteError(f"cannot write the event log ({exc.strerror or exc})", path) from exc


class EventLog:
    """Send events to a JSON-lines file (optional) and drive a progress bar (unless ``quiet``).

    Parameters
    ----------
    log_json : path-like, optional
        File to write (replaced at the start of the run, its folder created), one JSON object per line,
        flushed per event.
    quiet : bool
        No progress bar.
    """

    def __init__(self, log_json: str | os.PathLike[str] | None = None, quiet: bool = True) -> None:
        self._fh: TextIO | None = _open_log(Path(log_json)) if log_json else None
        self.quiet = quiet
        self._progress: Any = None
        self._task: Any = None

    def emit(self, event: str, **fields: Any) -> None:
        """Record one event and update the progress bar."""
        if self._fh is not None:
            record = {"time_utc": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
            self._fh.write(json.dumps(record, default=str) + "\n")
        if not self.quiet:
            self._show(event, fields)

    def _show(self, event: str, fields: dict[str, Any]) -> None:
        if event == "run_start" and fields["n_todo"]:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("last case {task.fields[last]}"),
                TextColumn("elapsed"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._progress.start()
            self._task = self._progress.add_task("starting workers", total=fields["n_todo"], last="-")
        elif self._progress is None:
            return
        elif event == "case_start":
            self._progress.update(self._task, description=f"case {fields['case_id']}")
        elif event in ("case_done", "case_failed"):
            last = f"{fields.get('seconds', 0.0):.1f} s" + ("" if event == "case_done" else " (failed)")
            self._progress.update(self._task, advance=1, last=last)
        elif event == "run_end":
            self._progress.update(self._task, description="done")
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        """Stop the progress bar and close the log file."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
