"""A third-party Segmenter for the tests: a fixed intensity threshold, registered through an entry point.

It lives outside the medseg package on purpose: the tests put it on the path
with a ``.dist-info`` whose ``entry_points.txt`` names :data:`KIND`, exactly as
an installed plugin package would.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from medseg.io.image import Image, LabelMap
from medseg.segmenters import SegmenterKind


class FixedThreshold:
    """Label 1 (``dense``) where the intensity is above ``threshold``; any dimensionality."""

    spatial_dims = None
    in_channels = 1
    postprocess = None

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.label_names = {1: "dense"}
        self.name = f"threshold {threshold:g}"

    def fingerprint(self) -> str:
        return hashlib.sha256(f"fixed-threshold:{self.threshold!r}".encode()).hexdigest()[:16]

    def segment(self, image: Image) -> LabelMap:
        return image.with_labels((image.array > self.threshold).astype(np.uint8), dict(self.label_names))


def load(spec: str, **options: object) -> FixedThreshold:
    """``threshold:VALUE`` -> a FixedThreshold at VALUE."""
    return FixedThreshold(float(spec))


KIND = SegmenterKind("fixed threshold (test plugin)", load, scheme="threshold")


class HangsAboveThreshold(FixedThreshold):
    """Like FixedThreshold, but never returns for an image with a voxel above ``threshold`` (a hung decoder or model)."""

    def segment(self, image: Image) -> LabelMap:
        if image.array.max() > self.threshold:
            time.sleep(3600)
        return super().segment(image)
