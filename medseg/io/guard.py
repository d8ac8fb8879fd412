"""Reading untrusted files: decoder failures become ReadErrors, declared sizes are checked before decoding.

Decoders written in C, C++ or Rust raise whatever their bindings choose for a
corrupt file (pyo3 turns a Rust panic into ``PanicException``, a
BaseException that passes ``except Exception``). :func:`decoding` wraps a
decoder call so that every such failure becomes a
:class:`~medseg.errors.ReadError` naming the file; KeyboardInterrupt,
SystemExit and GeneratorExit still propagate. :func:`check_declared_size`
refuses a header that declares more pixel bytes than the file can hold, or
than this machine's memory, before anything is allocated or decoded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from medseg.errors import MedsegError, ReadError

PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)  # never turned into a ReadError
DEFLATE_MAX_RATIO = 1032  # deflate (zlib, gzip, PNG) never expands a stream more than this


def one_line(exc: BaseException | str, path: str | os.PathLike[str] | None = None, limit: int = 200) -> str:
    """A message on one line of printable characters, at most ``limit`` long, ``path`` said as "the file".

    The ReadError built from it names the file already; an empty exception
    message gives the exception's type name.
    """
    text = str(exc)
    if path is not None:
        text = text.replace(str(path), "the file")
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if not text and isinstance(exc, BaseException):
        text = type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def decoding(path: str | os.PathLike[str], what: str, context: str = "") -> Iterator[None]:
    """Turn any failure inside the block into ``ReadError(f"{what} ({context}: {reason})", path)``.

    MedsegErrors and :data:`PASS_THROUGH` exceptions propagate unchanged; the
    original exception is chained as ``__cause__``. Native decoders raise
    anything, Rust panics (BaseException subclasses) included.
    """
    try:
        yield
    except (MedsegError, *PASS_THROUGH):
        raise
    except BaseException as exc:
        prefix = f"{context}: " if context else ""
        raise ReadError(f"{what} ({prefix}{one_line(exc, path)})", path) from exc


def physical_memory_bytes() -> int | None:
    """This machine's physical memory (bytes), None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``n`` bytes for a message: exact below 1 MiB (``"8130 bytes"``), else ``"3.4 MiB"``, ``"21.8 GiB"``."""
    if n < 1 << 20:
        return f"{n:.0f} bytes"
    for unit in ("MiB", "GiB"):
        n /= 1 << 20 if unit == "MiB" else 1 << 10
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"


def check_declared_size(
    path: str | os.PathLike[str],
    declared: int,
    what: str,
    *,
    present: int | None = None,
    max_ratio: float = 1.0,
) -> None:
    """Refuse ``declared`` bytes of decoded pixels that ``present`` bytes of data cannot hold, or memory cannot.

    Parameters
    ----------
    declared : int
        Decoded size (bytes) the header announces, e.g. rows x columns x
        frames x samples x bytes per sample.
    what : str
        The header's terms for that size, for the message (``"512 x 512 x 20 int16"``).
    present : int, optional
        Bytes of pixel data the file actually holds; None when unknown (skips that check).
    max_ratio : float
        How many times the encoding can expand: 1 for uncompressed data,
        :data:`DEFLATE_MAX_RATIO` for deflate.

    Raises
    ------
    medseg.errors.ReadError
        When the file cannot hold the declared pixels, or they exceed this machine's physical memory.
    """
    if present is not None and declared > present * max_ratio:
        limit = "" if max_ratio == 1 else f" (which expand at most {max_ratio:g} times)"
        raise ReadError(
            f"header declares {format_bytes(declared)} of pixels ({what}) but the file holds "
            f"{format_bytes(present)} of pixel data{limit}: corrupt header or truncated file",
            path,
        )
    memory = physical_memory_bytes()
    if memory is not None and declared > memory:
        raise ReadError(
            f"header declares {format_bytes(declared)} of pixels ({what}), more than this machine's "
            f"{format_bytes(memory)} of memory: corrupt header?",
            path,
        )
