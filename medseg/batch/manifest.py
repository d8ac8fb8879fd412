"""The batch manifest: one JSON line per finished case, appended and fsync'd.

A case's line is appended only after all of its outputs have been renamed into
place, so a run killed at any instant leaves either a complete, recorded case
or one that the next run redoes. A line torn by the kill does not parse and is
ignored; the later of two lines for the same case wins. At the end of a run the
file is compacted (latest record per case, rewritten under a temporary name
and renamed).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.atomic import write_text_atomic

MANIFEST_NAME = "manifest.jsonl"


@dataclass
class CaseRecord:
    """What the manifest remembers about a finished case.

    Attributes
    ----------
    case_id : str
        The case's id (its folder under ``cases/``).
    stat_fp, content_fp : str
        Fingerprints of the case's input files (see :mod:`medseg.batch.fingerprint`).
    pipeline_fp : str
        Fingerprint of the model weights and workflow config that produced the outputs.
    outputs : dict
        Output name -> ``{"path": relative to the output folder, "bytes": int, "sha256": str}``.
    seconds : float
        Wall time of the case, s.
    finished_utc : str
        ISO 8601 time the case was recorded.
    """

    case_id: str
    stat_fp: str
    content_fp: str
    pipeline_fp: str
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    finished_utc: str = ""

    def outputs_intact(self, root: Path) -> bool:
        """True when every recorded output exists under ``root`` with its recorded size."""
        for out in self.outputs.values():
            p = root / out["path"]
            try:
                if p.stat().st_size != out["bytes"]:
                    return False
            except OSError:
                return False
        return True


class Manifest:
    """Append-only record of finished cases in ``<output>/manifest.jsonl``."""

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / MANIFEST_NAME
        self.records: dict[str, CaseRecord] = {}
        self.torn_lines = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        for line in self.path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                rec = CaseRecord(**json.loads(line))
            except (ValueError, TypeError):
                self.torn_lines += 1
                continue
            self.records[rec.case_id] = rec

    def get(self, case_id: str) -> CaseRecord | None:
        """The latest record of ``case_id``, or None."""
        return self.records.get(case_id)

    def append(self, record: CaseRecord) -> None:
        """Record a finished case durably (write, flush, fsync) before returning."""
        line = json.dumps(asdict(record), sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab+") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # a line torn by a killed run: start on a fresh line
                    line = "\n" + line
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())
        self.records[record.case_id] = record

    def compact(self) -> None:
        """Rewrite the file with only the latest record per case (atomic rename)."""
        text = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in self.records.values())
        write_text_atomic(self.path, text)
        self.torn_lines = 0
