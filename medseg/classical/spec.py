"""``classical:NAME[:key=value,...]`` -> a configured method: the loader of the ``classical`` segmenter kind.

Importing this module imports every method module, so :data:`METHODS` is complete.
"""

from __future__ import annotations

from typing import Any

from medseg.classical import cluster, edges, recipes, region, threshold, watershed  # noqa: F401 -- they register
from medseg.classical.base import METHODS, SCHEME, ClassicalSegmenter
from medseg.errors import ConfigError


def parse_spec(spec: str) -> ClassicalSegmenter:
    """``NAME`` or ``NAME:key=value,key=value`` (the part after ``classical:``) -> the configured segmenter.

    Raises
    ------
    medseg.errors.ConfigError
        Unknown method, malformed ``key=value``, a repeated, unknown or invalid parameter.
    """
    method, _, rest = spec.strip().partition(":")
    if method not in METHODS:
        raise ConfigError(f"{SCHEME}:{method}: unknown method (known: {', '.join(sorted(METHODS))})")
    params: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{SCHEME}:{method}: expected key=value, got {item!r}")
        if key in params:
            raise ConfigError(f"{SCHEME}:{method}: parameter {key!r} given twice")
        params[key] = value.strip()
    return METHODS[method](**params)


def load_classical(spec: str, **options: Any) -> ClassicalSegmenter:
    """The loader of the ``classical`` segmenter kind (loader options such as ``device`` are ignored)."""
    return parse_spec(spec)

