"""The one exception family of medseg.

Every failure a user can cause (a bad file, a bad config, a mismatched grid)
raises a subclass of :class:`MedsegError` whose message names the file and the
reason in one line. Library internals never leak raw pydicom/nibabel/numpy
tracebacks for bad input; they are chained as ``__cause__``.
"""

from __future__ import annotations

from os import PathLike


class MedsegError(Exception):
    """Base class of every error medseg raises on purpose."""

    def __init__(self, reason: str, path: str | PathLike[str] | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class ReadError(MedsegError):
    """A file or folder could not be read as an image (corrupt, truncated, empty, unsupported)."""


class NotAnImageError(ReadError):
    """The input is readable but holds no image (DICOM SR, RTSTRUCT, RTPLAN, waveform, ...)."""


class UnsupportedTransferSyntaxError(ReadError):
    """Pixel data is compressed with a codec no installed decoder handles."""


class SeriesError(ReadError):
    """A DICOM series is ambiguous or inconsistent (several candidates, mixed sizes, gaps in strict mode)."""


class AnnotationError(ReadError):
    """An annotation file (COCO, GeoJSON, LabelMe, CVAT) is invalid: bad polygon, unknown category, wrong layout."""


class WriteError(MedsegError):
    """An output could not be written."""


class GeometryError(MedsegError):
    """Two images that must share a grid or overlap in world space do not."""


class LabelError(MedsegError):
    """A label map is invalid (non-integer values, labels absent from the config, ...)."""


class ConfigError(MedsegError):
    """A workflow config or dataset description is invalid."""


class ModelError(MedsegError):
    """A model directory is missing, inconsistent or unsafe to load."""


class PacsError(MedsegError):
    """A PACS (DICOMweb server) answered with an error, refused an instance, or did not answer in time."""
