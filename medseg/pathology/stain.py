"""H&E colour: optical density, colour deconvolution, Macenko stain normalisation, HED jitter.

Beer-Lambert: a stain's optical density (OD) is proportional to its amount, and
the OD of a pixel is the sum of the stains' unit OD vectors weighted by their
concentrations. With intensities ``I`` of 8-bit RGB, ``OD = -ln((I + 1) / 256)``
(white glass is 0). A :class:`StainMatrix` holds the unit OD vectors of
haematoxylin, eosin and a residual (the third axis: their cross product, where
DAB would be); :meth:`StainMatrix.concentrations` deconvolves pixels into them.

* :data:`RUIFROK_HED`: the standard H&E(-DAB) vectors of Ruifrok & Johnston
  (2001), as scikit-image's ``rgb2hed`` uses them;
* :func:`macenko`: the slide's own H and E vectors and their robust maximum
  concentrations (Macenko et al. 2009): OD of pixels above ``beta``, plane of
  the two main eigenvectors, extreme angles at the ``alpha`` percentiles;
* :class:`StainNormalizer`: pixels deconvolved with the source's vectors,
  concentrations scaled to the reference's maxima, recomposed with the
  reference's vectors. Fit it once per slide (on the whole slide's overview),
  never per tile: per-tile statistics differ and leave seams;
* :func:`hed_jitter`: training augmentation (Tellez et al. 2018): each stain's
  concentration scaled by ``U(1 - sigma, 1 + sigma)`` and shifted by
  ``U(-bias, bias)``.

Arrays carry the colour in their last axis (medseg Images: ``[x, y, 3]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medseg.errors import GeometryError
from medseg.io.image import Image

_I0 = 256.0  # (I + 1) / 256: 8-bit white (255) has OD 0, black stays finite
STAINS = ("haematoxylin", "eosin", "residual")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclass(frozen=True)
class StainMatrix:
    """Unit OD vectors (rows: haematoxylin, eosin, residual; columns R, G, B)."""

    vectors: np.ndarray

    @classmethod
    def from_he(cls, haematoxylin: np.ndarray, eosin: np.ndarray) -> StainMatrix:
        """The matrix of two stain OD vectors, with the residual axis orthogonal to both."""
        h, e = _unit(np.asarray(haematoxylin, float)), _unit(np.asarray(eosin, float))
        return cls(np.stack([h, e, _unit(np.cross(h, e))]))

    def concentrations(self, rgb: np.ndarray) -> np.ndarray:
        """Stain amounts (OD units) of 8-bit RGB pixels: ``(..., 3)`` haematoxylin, eosin, residual."""
        return optical_density(rgb) @ np.linalg.inv(self.vectors)

    def rgb(self, concentrations: np.ndarray) -> np.ndarray:
        """8-bit RGB pixels of stain amounts ``(..., 3)`` (the inverse of :meth:`concentrations`)."""
        od = concentrations @ self.vectors
        return np.clip(np.round(_I0 * np.exp(-od) - 1.0), 0, 255).astype(np.uint8)


RUIFROK_HED = StainMatrix(_unit(np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])))
"""Ruifrok & Johnston's haematoxylin, eosin and DAB vectors (scikit-image's ``hed_from_rgb`` inverted)."""


@dataclass(frozen=True)
class StainReference:
    """A slide's (or a reference image's) stain vectors and robust maximum H and E concentrations (OD)."""

    matrix: StainMatrix
    max_concentrations: tuple[float, float]


MACENKO_REFERENCE = StainReference(
    StainMatrix.from_he(np.array([0.5626, 0.7201, 0.4062]), np.array([0.2159, 0.8012, 0.5581])), (1.9705, 1.0308)
)
"""The reference H&E appearance of Macenko's reference implementation (its HERef and maxCRef)."""


def _pixels(image: Image | np.ndarray) -> np.ndarray:
    arr = image.array if isinstance(image, Image) else np.asarray(image)
    if arr.shape[-1] != 3 or (isinstance(image, Image) and not image.channel_axis):
        raise GeometryError(f"H&E colour needs RGB pixels, got shape {arr.shape}", getattr(image, "source", None))
    return arr


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """``-ln((I + 1) / 256)`` of 8-bit pixels (float32; 0 for white)."""
    return -np.log((np.asarray(rgb, np.float32) + 1.0) / np.float32(_I0))


def deconvolve(image: Image | np.ndarray, stains: StainMatrix = RUIFROK_HED) -> np.ndarray:
    """Haematoxylin, eosin and residual amounts (OD) of every pixel: the last axis of the result."""
    return stains.concentrations(_pixels(image))


def macenko(
    image: Image | np.ndarray, *, beta: float = 0.15, alpha: float = 1.0, mask: np.ndarray | None = None
) -> StainReference:
    """Fit H and E vectors and maximum concentrations to an H&E image (Macenko et al. 2009).

    Parameters
    ----------
    image : Image or ndarray
        8-bit RGB (a whole slide's overview: the statistics of every tile).
    beta : float
        OD below which (in any channel) a pixel counts as unstained background.
    alpha : float
        Percentile (and 100 - alpha) of the angles taken as the extreme stain directions.
    mask : ndarray of bool, optional
        The pixels to use (tissue), shaped like the image's spatial axes.

    Raises
    ------
    medseg.errors.GeometryError
        Fewer than 100 stained pixels to fit, or stained pixels of a single colour.
    """
    od = optical_density(_pixels(image)).reshape(-1, 3)
    if mask is not None:
        od = od[np.asarray(mask).reshape(-1)]
    od = od[(od > beta).all(axis=1)]
    if len(od) < 100:
        raise GeometryError(f"only {len(od)} stained pixels (OD > {beta}); cannot fit stain vectors",
                            getattr(image, "source", None))
    _, vectors = np.linalg.eigh(np.cov(od, rowvar=False))
    plane = vectors[:, 1:3]  # the two largest eigenvectors
    plane = plane * np.where(plane[0] < 0, -1.0, 1.0)  # point into positive OD
    projected = od @ plane
    angle = np.arctan2(projected[:, 1], projected[:, 0])
    lo, hi = np.percentile(angle, [alpha, 100 - alpha])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    h, e = (v1, v2) if v1[0] > v2[0] else (v2, v1)  # haematoxylin absorbs more red light
    if np.linalg.norm(np.cross(h / np.linalg.norm(h), e / np.linalg.norm(e))) < 1e-3:
        raise GeometryError("the stained pixels have one colour (their extreme stain directions coincide); cannot "
                            "separate haematoxylin from eosin", getattr(image, "source", None))
    matrix = StainMatrix.from_he(h, e)
    conc = od @ np.linalg.inv(matrix.vectors)
    max_c = np.percentile(conc[:, :2], 99, axis=0)
    return StainReference(matrix, (float(max_c[0]), float(max_c[1])))


@dataclass(frozen=True)
class StainNormalizer:
    """Maps the stain appearance of ``source`` onto ``target`` (Macenko normalisation), pixel by pixel.

    Examples
    --------
    >>> norm = StainNormalizer(macenko(slide.overview(), mask=tissue.mask))  # doctest: +SKIP
    >>> tile_rgb = norm(slide.read_region((x, y), (1024, 1024)).array)      # doctest: +SKIP
    """

    source: StainReference
    target: StainReference = MACENKO_REFERENCE

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """8-bit RGB pixels with the target's stain vectors and concentration range."""
        conc = self.source.matrix.concentrations(rgb)
        scale = np.ones(3, np.float32)
        scale[:2] = np.asarray(self.target.max_concentrations) / np.asarray(self.source.max_concentrations)
        return self.target.matrix.rgb(conc * scale)


def jitter_stains(
    rgb: np.ndarray, alpha: np.ndarray, beta: np.ndarray, stains: StainMatrix = RUIFROK_HED
) -> np.ndarray:
    """8-bit RGB whose stain amounts (H, E, residual) are multiplied by ``alpha`` and shifted by ``beta`` (OD)."""
    return stains.rgb(stains.concentrations(rgb) * np.asarray(alpha) + np.asarray(beta))


def hed_jitter(
    rgb: np.ndarray, rng: np.random.Generator, *, sigma: float = 0.05, bias: float = 0.05,
    stains: StainMatrix = RUIFROK_HED,
) -> np.ndarray:
    """8-bit RGB with each stain's amount scaled by ``U(1 - sigma, 1 + sigma)`` and shifted by ``U(-bias, bias)``."""
    return jitter_stains(rgb, rng.uniform(1 - sigma, 1 + sigma, 3), rng.uniform(-bias, bias, 3), stains)


__all__ = [
    "MACENKO_REFERENCE",
    "RUIFROK_HED",
    "STAINS",
    "StainMatrix",
    "StainNormalizer",
    "StainReference",
    "deconvolve",
    "hed_jitter",
    "jitter_stains",
    "macenko",
    "optical_density",
]
