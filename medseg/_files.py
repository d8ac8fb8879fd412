"""Reading config-like files (text, JSON, YAML): every failure is a :class:`MedsegError` naming the file.

Missing files, folders, unreadable or non-UTF-8 bytes, syntax errors (with
line and column) and a top-level value of the wrong type all become one-line
errors, ``<file>: <reason>``, of the class the caller chooses (default
:class:`~medseg.errors.ConfigError`).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import yaml

from medseg.errors import ConfigError, MedsegError

_OS_REASONS = {errno.ENOENT: "no such file", errno.EISDIR: "it is a folder", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}  # fmt: skip
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}  # fmt: skip
_YAML_TYPES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "an empty document"}  # fmt: skip


def read_text(path: str | os.PathLike[str], what: str = "file", error: type[MedsegError] = ConfigError) -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark dropped).

    ``what`` names the file in messages ("config", "model card", ...);
    ``error`` is the class raised when the file cannot be read or decoded.
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        reason = _OS_REASONS.get(exc.errno or 0, exc.strerror or type(exc).__name__)
        raise error(f"cannot read {what} ({reason})", path) from exc
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})", path
        ) from exc


def read_json(
    path: str | os.PathLike[str],
    what: str = "file",
    expect: type | None = None,
    error: type[MedsegError] = ConfigError,
) -> Any:
    """Parse ``path`` as JSON; ``expect`` (``dict`` or ``list``) is the required top-level type."""
    text = read_text(path, what, error)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", path) from exc
    except RecursionError as exc:
        raise error(f"{what} is nested too deeply to parse", path) from exc
    return _checked(data, expect, _JSON_TYPES, what, path, error)


def read_yaml(
    path: str | os.PathLike[str],
    what: str = "file",
    expect: type | None = None,
    error: type[MedsegError] = ConfigError,
) -> Any:
    """Parse ``path`` as YAML (safe loader); ``expect`` (``dict`` or ``list``) is the required top-level type."""
    text = read_text(path, what, error)
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise error(f"{what} is not valid YAML ({exc.problem or exc.context}{where})", path) from exc
    except yaml.YAMLError as exc:  # e.g. control characters, reported by the reader with a position
        raise error(f"{what} is not valid YAML ({' '.join(str(exc).split())})", path) from exc
    return _checked(data, expect, _YAML_TYPES, what, path, error)


def _checked(
    data: Any, expect: type | None, names: dict[type, str], what: str, path: Path | str, error: type[MedsegError]
) -> Any:
    """``data`` when it is an ``expect`` (or no type is expected); else ``error`` naming both types."""
    if expect is not None and not isinstance(data, expect):
        got = names.get(type(data), type(data).__name__)
        raise error(f"{what} must be {names[expect]} at the top level, got {got}", path)
    return data


def read_label_names(path: Path) -> dict[int, str]:
    """Label names from JSON: ``{"1": "spleen", ...}``, or MSD/nnU-Net style ``{"labels": {"spleen": 1, ...}}``.

    Raises
    ------
    medseg.errors.ConfigError
        When the file cannot be read or maps nothing to integers.
    """
    data = read_json(path, "label names file", expect=dict)
    if isinstance(data.get("labels"), dict):
        data = data["labels"]
    names: dict[int, str] = {}
    for key, value in data.items():
        if str(key).lstrip("-").isdigit():
            names[int(key)] = str(value)
        elif isinstance(value, int) or str(value).isdigit():
            names[int(value)] = str(key)
        else:
            raise ConfigError(f"entry {key!r}: {value!r} maps no integer label value to a name", path)
    names.pop(0, None)
    return names
