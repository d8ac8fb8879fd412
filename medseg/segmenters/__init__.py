"""Every way of segmenting behind one interface: the :class:`Segmenter` protocol and its registry.

See :mod:`medseg.segmenters.base` for the protocol, the spec rules and how a
third-party package registers a kind (entry-point group ``medseg.segmenters``).
"""

from medseg.segmenters.base import (
    ENTRY_POINT_GROUP,
    Promptable,
    Segmenter,
    SegmenterKind,
    foreground_names,
    load_segmenter,
    register_segmenter,
    registered_kinds,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Promptable",
    "Segmenter",
    "SegmenterKind",
    "foreground_names",
    "load_segmenter",
    "register_segmenter",
    "registered_kinds",
]
