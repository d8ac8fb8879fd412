"""The sliding-window grid of a whole image, for predicting one part (a slide's tile) of it.

Pure geometry and bookkeeping, without torch (a tiled run of a classical segmenter imports no network
stack): where MONAI's sliding windows lie along an axis (:func:`window_starts`, also for the mirrored
grids of test-time augmentation), which of them a part needs (:func:`part_extent`), the part itself
(:class:`ImagePart`) and the window outputs shared between parts (:class:`WindowCache`).
:func:`medseg.infer.part_probabilities` does the predicting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from medseg.config import WorkflowConfig


def window_starts(size: int, roi: int, step: int, mirrored: bool = False) -> list[int]:
    """Starts (px) of MONAI's sliding windows along an axis of ``size`` px (``roi`` wide, every ``step`` px, the
    last one flush with the end); ``mirrored``: those of the flipped axis (test-time mirroring), unflipped."""
    if size <= roi:
        return [0]
    starts = [min(i * step, size - roi) for i in range(math.ceil((size - roi) / step) + 1)]
    return [size - roi - s for s in starts] if mirrored else starts


def window_step(config: WorkflowConfig, roi: int, size: int | None = None) -> int:
    """The sliding window's step (px) along an axis of ``size`` px, as MONAI derives it from the overlap (one
    window, so no step, where the window spans the axis)."""
    return roi if roi == size else max(1, int(roi * (1 - config.inference.overlap)))


@dataclass
class WindowCache:
    """Network outputs (logits, float32) of the sliding windows of one whole image, kept for the parts (tiles)
    that share them, up to ``max_bytes``; what does not fit is computed again when needed."""

    max_bytes: int = 512 << 20
    entries: dict[tuple, torch.Tensor] = field(default_factory=dict)
    nbytes: int = 0
    computed: int = 0
    reused: int = 0

    def keep(self, key: tuple, logits: torch.Tensor) -> None:
        """Store ``logits`` (a tensor of their own, not a view) under a new ``key`` if they fit."""
        size = logits.element_size() * logits.nelement()
        if self.nbytes + size <= self.max_bytes:
            self.entries[key] = logits
            self.nbytes += size

    def drop(self, key: tuple) -> None:
        """Forget ``key``'s logits (no part still to come needs them)."""
        logits = self.entries.pop(key, None)
        if logits is not None:
            self.nbytes -= logits.element_size() * logits.nelement()


Box = tuple[tuple[int, int], ...]  # (start, end) px per spatial axis, end exclusive


@dataclass(frozen=True)
class ImagePart:
    """A piece of a larger image, predicted with the *whole* image's sliding windows.

    The piece must hold every window (of every mirrored window grid in use) that overlaps ``region``
    (:func:`part_extent`); then the probabilities over ``region`` equal those of predicting the whole image.

    Attributes
    ----------
    shape : tuple of int
        The whole image's spatial shape, px (on the model grid: the part path needs no resampling), longer than
        the sliding window along every axis.
    origin : tuple of int
        The piece's first pixel in the whole image.
    region : Box
        The pixels to predict, whole-image px.
    cache : WindowCache, optional
        Window outputs shared between parts.
    needed_later : callable, optional
        Whether a part still to come overlaps a window's box (whole-image px): windows that none does leave the
        cache after this part.
    """

    shape: tuple[int, ...]
    origin: tuple[int, ...]
    region: Box
    cache: WindowCache | None = None
    needed_later: Callable[[Box], bool] | None = None


def part_windows(size: int, roi: int, step: int, lo: int, hi: int, mirrored: bool) -> list[int]:
    """Starts of the windows along one axis (of the forward or mirrored grid) that overlap ``[lo, hi)``."""
    return [s for s in window_starts(size, roi, step, mirrored) if s < hi and s + roi > lo]


def part_extent(
    shape: Sequence[int], roi: Sequence[int], step: Sequence[int], region: Box, mirrored: Sequence[bool]
) -> Box:
    """The piece of a ``shape`` image to read so that :func:`part_probabilities` can predict ``region``: every
    window (``roi`` every ``step`` px per axis) overlapping it, of the forward grid and, along the axes
    ``mirrored`` by test-time augmentation, of the mirrored one."""
    out = []
    for size, r, s, (lo, hi), m in zip(shape, roi, step, region, mirrored, strict=True):
        starts = [start for flip in {False, bool(m)} for start in part_windows(size, r, s, lo, hi, flip)]
        out.append((min(starts), min(size, max(starts) + r)))
    return tuple(out)


__all__ = ["Box", "ImagePart", "WindowCache", "part_extent", "part_windows", "window_starts", "window_step"]
