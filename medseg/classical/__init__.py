"""Classical segmentation: thresholds, region growing, watersheds, edges, clustering, and recipes built from them.

Every method is a :class:`medseg.segmenters.Segmenter`, so it runs from Python,
``medseg segment``, ``medseg batch`` and as ``medseg evaluate --baseline``::

    from medseg.classical import Otsu, RegionGrowing
    mask = Otsu().segment(ct)
    liver = RegionGrowing(seeds=[(-60.0, -200.0, -790.0)], lower=60, upper=200).segment(ct)

    medseg segment "classical:region_growing:seeds=-60/-200/-790,lower=60,upper=200" ct/ --out out/
    medseg batch classical:ct_lungs scans/ out/

Spec syntax: ``classical:NAME`` or ``classical:NAME:key=value,key=value``.
Lengths and sizes carry their unit (``min_separation=4um``, ``min_volume=10ml``,
``px`` counts voxels); intensities are in the image's unit (HU for CT);
points are world coordinates in mm (LPS), ``x/y/z``, several joined by ``;``
(quote the spec in a shell). An unknown or invalid parameter is a
:class:`medseg.errors.ConfigError` naming it. A segmenter's ``name`` is its
canonical spec (the parameters that differ from the defaults) and its
``fingerprint()`` hashes every parameter.

Methods (``classical:NAME``): ``threshold``, ``otsu``, ``multi_otsu``, ``local``;
``region_growing``, ``confidence_connected``; ``distance_watershed``,
``gradient_watershed``; ``sobel``, ``canny``; ``kmeans``, ``gmm``, ``slic``.
Recipes: ``ct_body``, ``ct_lungs``, ``ct_bone``, ``he_tissue``, ``xray_lungs``,
``fluo_nuclei`` (see :mod:`medseg.classical.recipes` for what each does and where it fails).
"""

from medseg.classical.base import METHODS, ClassicalSegmenter
from medseg.classical.cluster import SLIC, GaussianMixture, KMeans
from medseg.classical.edges import Canny, Sobel
from medseg.classical.recipes import CTBodyMask, CTBone, CTLungs, FluoNuclei, HETissue, XrayLungs
from medseg.classical.region import ConfidenceConnected, RegionGrowing
from medseg.classical.spec import load_classical, parse_spec
from medseg.classical.threshold import LocalThreshold, MultiOtsu, Otsu, Threshold
from medseg.classical.watershed import DistanceWatershed, GradientWatershed

__all__ = [
    "METHODS",
    "SLIC",
    "CTBodyMask",
    "CTBone",
    "CTLungs",
    "Canny",
    "ClassicalSegmenter",
    "ConfidenceConnected",
    "DistanceWatershed",
    "FluoNuclei",
    "GaussianMixture",
    "GradientWatershed",
    "HETissue",
    "KMeans",
    "LocalThreshold",
    "MultiOtsu",
    "Otsu",
    "RegionGrowing",
    "Sobel",
    "Threshold",
    "XrayLungs",
    "load_classical",
    "parse_spec",
]
