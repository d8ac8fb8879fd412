"""Cheap checks run for every path spec: is this an nnU-Net results folder, or a multi-model task file?

No torch, no numpy: only file names (and, for a task file, its top-level keys).
"""

from __future__ import annotations

from pathlib import Path

TASK_SUFFIXES = (".yaml", ".yml", ".json")


def is_nnunet_folder(path: Path) -> bool:
    """True for a folder with ``plans.json`` and ``dataset.json`` (an nnU-Net v2 training output folder).

    The checkpoints are checked when loading, so a folder without any
    ``fold_*`` is still recognised and then refused with a clear message.
    """
    return path.is_dir() and (path / "plans.json").is_file() and (path / "dataset.json").is_file()


def is_task_file(path: Path) -> bool:
    """True for a YAML or JSON file whose top level is a mapping with a ``parts`` list (a multi-model task)."""
    if not path.is_file() or path.suffix.lower() not in TASK_SUFFIXES:
        return False
    try:
        if path.stat().st_size > 1 << 20:
            return False
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return False
    if "parts" not in text:
        return False
    if path.suffix.lower() == ".json":
        import json

        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return False
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            return False
    return isinstance(data, dict) and isinstance(data.get("parts"), list)
