"""Whole-slide images, read lazily: pyramid levels, pixel size, regions in level-0 pixels or micrometres.

:func:`open_slide` returns a :class:`Slide` that never holds a whole level in
memory: :meth:`Slide.read_region` decodes only the tiles a region covers, and
:meth:`Slide.overview` builds a low-resolution picture of the whole slide from
the best pyramid level, chunk by chunk. Backends:

* **OpenSlide** (``openslide-python`` with the ``openslide-bin`` wheel): Aperio
  SVS, Hamamatsu NDPI/VMS, MIRAX, Leica SCN, Ventana BIF, Philips TIFF, Sakura,
  DICOM WSI and generic tiled pyramidal TIFF, as 8-bit RGB;
* **tiffslide** (tifffile + zarr, pure Python): what OpenSlide cannot open
  (OME-TIFF with SubIFD pyramids) and every TIFF whose pixels are not 8-bit
  colour (16-bit fluorescence, label pyramids), in their own type and channels;
* an in-memory :class:`~medseg.io.image.Image` (:meth:`Slide.from_image`), so
  tiled processing works for any 2D image too large to segment in one piece.

Coordinates: ``x`` is the column and ``y`` the row of level 0, level-0 pixel
``(0, 0)`` covers ``[0, 1] x [0, 1]`` px, i.e. ``[0, mpp] x [0, mpp]`` um.
Regions come back as :class:`~medseg.io.image.Image` (``[x, y, channel]``,
modality ``SM``) whose spacing is the level's pixel size in mm and whose
origin is the position of its first pixel centre, so world millimetres are
slide micrometres / 1000. The pixel size (microns per pixel, ``mpp``) comes
only from the format's own tags (``openslide.mpp-x``, ``tiffslide.mpp-x``,
TIFF resolution); without one, ``spacing_known`` is False and nothing
assumes 1 um, unless the caller gives ``mpp``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from medseg.errors import GeometryError, ReadError
from medseg.io.formats import FORMATS
from medseg.io.guard import PASS_THROUGH, one_line
from medseg.io.image import Image
from medseg.io.pyramid import block_mean

SLIDE_SUFFIXES = next(f.suffixes for f in FORMATS if f.family == "slide")
"""Suffixes that are always whole-slide images (TIFF and DICOM files may be slides too: :func:`is_slide_file`)."""
OVERVIEW_MAX_SIDE = 4096
"""Longest side (px) of the overview :func:`load_slide_overview` and :meth:`Slide.overview` build by default."""
_CHUNK = 2048  # level pixels per side read at a time while building an overview
_RGB8 = (3, 4)  # samples per pixel of the 8-bit colour TIFFs OpenSlide reads without loss


@dataclass(frozen=True)
class SlideLevel:
    """One pyramid level: ``dimensions`` (width, height) in its own pixels, ``downsample`` from level 0."""

    dimensions: tuple[int, int]
    downsample: float


class Slide:
    """A lazily read whole-slide image (use :func:`open_slide` or :meth:`from_image`).

    Attributes
    ----------
    path : str
        The file (``"<memory>"`` for an in-memory image).
    backend : str
        ``"openslide"``, ``"tiffslide"`` or ``"array"``.
    levels : list of SlideLevel
        Level 0 first (full resolution).
    mpp : (float, float) or None
        Microns per level-0 pixel along x and y, None when the file states none.
    mpp_source : str
        ``"openslide.mpp-x"``/``"tiffslide.mpp-x"`` (the format's tag), ``"caller"`` or ``"none"``.
    objective_power : float or None
        Scanning objective magnification (``20``, ``40``), when stated.
    vendor : str
        The format (``aperio``, ``hamamatsu``, ``generic-tiff``, ``ome``, ...).
    properties : dict of str to str
        Every property the backend reports.
    """

    def __init__(self, handle: Any, backend: str, path: str, mpp: float | tuple[float, float] | None = None) -> None:
        self._handle = handle
        self.backend = backend
        self.path = path
        self._array: np.ndarray | None = None
        props = {} if backend == "array" else {str(k): str(v) for k, v in handle.properties.items()}
        self.properties = props
        if backend != "array":
            self.levels = [
                SlideLevel((int(w), int(h)), float(d))
                for (w, h), d in zip(handle.level_dimensions, handle.level_downsamples, strict=True)
            ]
            self.vendor = props.get(f"{backend}.vendor", "")
            self.objective_power = _number(props.get(f"{backend}.objective-power"))
            file_mpp = _number(props.get(f"{backend}.mpp-x")), _number(props.get(f"{backend}.mpp-y"))
        else:
            self.vendor, self.objective_power, file_mpp = "array", None, (None, None)
        self.mpp: tuple[float, float] | None = None
        self.mpp_source = "none"
        if mpp is not None:
            self.set_mpp(mpp)
        elif file_mpp[0] and file_mpp[0] > 0:
            self.mpp = (file_mpp[0], file_mpp[1] if file_mpp[1] and file_mpp[1] > 0 else file_mpp[0])
            self.mpp_source = f"{backend}.mpp-x"
        elif backend == "tiffslide" and (ome := _ome_mpp(Path(path))) is not None:
            self.mpp, self.mpp_source = ome, "ome.PhysicalSizeX"

    # ---- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_image(cls, image: Image, mpp: float | tuple[float, float] | None = None) -> Slide:
        """A one-level slide over a 2D image in memory; its pixel size is the image's spacing (mm -> um) or ``mpp``."""
        if image.ndim != 2:
            raise GeometryError(f"a slide is 2D; the image has shape {image.shape}", image.source)
        slide = cls(None, "array", image.source or "<memory>", mpp)
        slide._array = image.array
        slide.levels = [SlideLevel((int(image.shape[0]), int(image.shape[1])), 1.0)]
        if mpp is None and image.spacing_known:
            slide.mpp, slide.mpp_source = (image.spacing[0] * 1000.0, image.spacing[1] * 1000.0), "image spacing"
        return slide

    def set_mpp(self, mpp: float | tuple[float, float]) -> None:
        """Use ``mpp`` (microns per level-0 pixel) instead of the file's pixel size."""
        self.mpp, self.mpp_source = _checked_mpp(mpp, self.path), "caller"

    def _reopen(self) -> None:
        """A fresh backend handle (OpenSlide handles stay unusable after a read error)."""
        if self.backend != "array":
            self._handle.close()
            self._handle = _open_handle(Path(self.path), self.backend)

    def close(self) -> None:
        """Release the file handle."""
        if self._handle is not None:
            self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what it is ------------------------------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0, px."""
        return self.levels[0].dimensions

    @property
    def spacing_known(self) -> bool:
        """True when the pixel size is known (from the file or the caller)."""
        return self.mpp is not None

    @property
    def associated_images(self) -> list[str]:
        """Names of the associated images (``label``, ``macro``, ``thumbnail``)."""
        return [] if self.backend == "array" else sorted(self._handle.associated_images)

    def describe(self) -> dict[str, Any]:
        """Everything ``medseg info`` shows about the slide, JSON-ready (units in the key names)."""
        return {
            "backend": self.backend,
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "mpp_um": list(self.mpp) if self.mpp else None,
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
            "levels": [
                {"level": k, "dimensions": list(lv.dimensions), "downsample": round(lv.downsample, 4),
                 "mpp_um": [round(m * lv.downsample, 6) for m in self.mpp] if self.mpp else None}
                for k, lv in enumerate(self.levels)
            ],
            "associated_images": {
                name: list(self._handle.associated_images[name].size) for name in self.associated_images
            },
        }

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (1% tolerance; level 0 for 1 or less)."""
        fits = [k for k, lv in enumerate(self.levels) if lv.downsample <= downsample * 1.01]
        return max(fits, key=lambda k: self.levels[k].downsample) if fits else 0

    # ---- pixels --------------------------------------------------------------------------------------------------
    def read_region(self, location: tuple[int, int], size: tuple[int, int], level: int = 0) -> Image:
        """The pixels of a rectangle: ``location`` (x, y) in level-0 px, ``size`` (width, height) in level px.

        Parts outside the slide read as white (8-bit colour) or 0; a region
        entirely outside is refused.

        Raises
        ------
        medseg.errors.GeometryError
            A bad level, an empty size, or a region that misses the slide.
        medseg.errors.ReadError
            A tile that does not decode (the handle is reopened, so later reads work).
        """
        if not 0 <= level < len(self.levels):
            raise GeometryError(f"level {level} does not exist (the slide has {len(self.levels)})", self.path)
        (x, y), (w, h) = (int(location[0]), int(location[1])), (int(size[0]), int(size[1]))
        ds = self.levels[level].downsample
        width, height = self.dimensions
        if w <= 0 or h <= 0:
            raise GeometryError(f"region size must be positive, got {w}x{h}", self.path)
        if x >= width or y >= height or x + w * ds <= 0 or y + h * ds <= 0:
            raise GeometryError(
                f"region at ({x}, {y}) of {w}x{h} level-{level} px lies outside the slide ({width}x{height} px)",
                self.path,
            )
        try:
            pixels = self._read(x, y, w, h, level)
        except PASS_THROUGH:
            raise
        except BaseException as exc:
            self._reopen()
            raise ReadError(f"region at ({x}, {y}) of {w}x{h} px, level {level}: {one_line(exc, self.path)}",
                            self.path) from exc
        return self._image(pixels, x, y, ds, {"level": level, "location": [x, y]})

    def read_region_um(self, origin_um: tuple[float, float], size_um: tuple[float, float], level: int = 0) -> Image:
        """:meth:`read_region` of a rectangle given in slide micrometres (needs the pixel size)."""
        mpp = self.require_mpp("a region in micrometres")
        ds = self.levels[level].downsample if 0 <= level < len(self.levels) else 1.0
        x, y = (math.floor(o / m) for o, m in zip(origin_um, mpp, strict=True))
        w, h = (max(1, round(s / (m * ds))) for s, m in zip(size_um, mpp, strict=True))
        return self.read_region((x, y), (w, h), level)

    def require_mpp(self, what: str) -> tuple[float, float]:
        """The pixel size (um), or a clear error saying that ``what`` needs one and how to give it."""
        if self.mpp is None:
            raise GeometryError(f"the slide states no pixel size, which {what} needs; give it (--mpp UM_PER_PIXEL, "
                                "or mpp= in Python) or ask for pixel units", self.path)
        return self.mpp

    def _read(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        """Pixels ``[x, y(, c)]`` of a region, padded outside the slide."""
        if self.backend == "array":
            return _padded_crop(self._array, x, y, w, h)
        if self.backend == "tiffslide":
            arr = np.asarray(self._handle.read_region((x, y), level, (w, h), as_array=True))
            arr = arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
            return np.swapaxes(arr, 0, 1)
        rgba = np.asarray(self._handle.read_region((x, y), level, (w, h)))
        rgb = rgba[..., :3].copy()
        rgb[rgba[..., 3] == 0] = 255  # transparent (outside the scanned area) reads as white glass
        return np.swapaxes(rgb, 0, 1)

    def _image(self, pixels: np.ndarray, x: float, y: float, ds: float, meta: dict[str, Any]) -> Image:
        mpp = self.mpp or (1.0, 1.0)
        centre = ((x + ds / 2) * mpp[0] / 1000.0, (y + ds / 2) * mpp[1] / 1000.0) if self.mpp else (x, y)
        spacing = (mpp[0] * ds / 1000.0, mpp[1] * ds / 1000.0) if self.mpp else ()
        return Image(
            pixels,
            spacing=spacing,
            origin=centre,
            modality="SM",
            spacing_known=self.mpp is not None,
            channel_axis=pixels.ndim == 3,
            meta={"slide": self.path, "downsample": ds, **meta},
            source=self.path,
        )

    def overview(self, max_side: int = OVERVIEW_MAX_SIDE) -> Image:
        """The whole slide at most ``max_side`` px on its longest side, averaged from the best level in chunks.

        Only one chunk of the source level is in memory at a time;
        ``meta["downsample"]`` is the overview's downsample from level 0.
        """
        width, height = self.dimensions
        target = max(1.0, max(width, height) / max_side)
        level = self.best_level(math.ceil(target))  # a stored level that is coarse enough beats averaging a finer one
        ds = self.levels[level].downsample
        factor = max(1, math.ceil(target / ds - 1e-9))
        lw, lh = self.levels[level].dimensions
        out_w, out_h = -(-lw // factor), -(-lh // factor)
        step = max(1, _CHUNK // factor) * factor
        out: np.ndarray | None = None
        broken: list[tuple[slice, slice]] = []
        errors: list[str] = []

        def put(cx: int, cy: int, w: int, h: int, size: int) -> None:
            """Average one chunk into ``out``; a chunk that fails is read again in smaller pieces, down to tiles."""
            nonlocal out
            where = (slice(cx // factor, -(-(cx + w) // factor)), slice(cy // factor, -(-(cy + h) // factor)))
            try:
                small = block_mean(self.read_region((round(cx * ds), round(cy * ds)), (w, h), level).array, factor)
            except ReadError as exc:
                piece = max(1, (size // 4) // factor) * factor
                if piece >= size or size <= 256:  # a corrupt tile: left blank, said in the warnings
                    broken.append(where)
                    errors.append(exc.reason)
                    return
                for py in range(cy, cy + h, piece):
                    for px in range(cx, cx + w, piece):
                        put(px, py, min(piece, cx + w - px), min(piece, cy + h - py), piece)
                return
            if out is None:
                out = np.empty((out_w, out_h, *small.shape[2:]), small.dtype)
            out[where] = small

        for cy in range(0, lh, step):
            for cx in range(0, lw, step):
                put(cx, cy, min(step, lw - cx), min(step, lh - cy), step)
        if out is None:
            raise ReadError(f"no part of level {level} could be read ({errors[0]})", self.path)
        for where in broken:
            out[where] = 255 if out.ndim == 3 and out.dtype == np.uint8 else 0
        image = self._image(out, 0, 0, ds * factor, {"level": level, "overview": True,
                                                       "level0_dimensions": [width, height]})
        image.warnings += [f"overview: {e}; that part is left blank" for e in errors]
        return image

    def associated_image(self, name: str) -> Image:
        """An associated image (``label``, ``macro``, ``thumbnail``) as RGB, spacing unknown."""
        if name not in self.associated_images:
            known = ", ".join(self.associated_images) or "none"
            raise ReadError(f"no associated image {name!r} (the slide has: {known})", self.path)
        pixels = np.asarray(self._handle.associated_images[name].convert("RGB"))
        return Image(np.swapaxes(pixels, 0, 1), modality="SM", spacing_known=False, channel_axis=True,
                     meta={"slide": self.path, "associated_image": name}, source=self.path)

    def __repr__(self) -> str:
        mpp = f"{self.mpp[0]:.4g} um/px" if self.mpp else "pixel size unknown"
        dims = ", ".join("x".join(map(str, lv.dimensions)) for lv in self.levels)
        return f"Slide({Path(self.path).name}, {self.backend}/{self.vendor}, levels {dims}, {mpp})"


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _checked_mpp(mpp: float | tuple[float, float], path: str) -> tuple[float, float]:
    values = (float(mpp), float(mpp)) if np.isscalar(mpp) else tuple(float(m) for m in mpp)  # type: ignore[arg-type]
    if len(values) != 2 or not all(math.isfinite(m) and m > 0 for m in values):
        raise GeometryError(f"mpp must be one positive number or two (um per pixel), got {mpp!r}", path)
    return values  # type: ignore[return-value]


def _padded_crop(array: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """``array[x:x+w, y:y+h]`` with the part outside filled (white for 8-bit colour, else 0)."""
    fill = 255 if array.ndim == 3 and array.dtype == np.uint8 else 0
    out = np.full((w, h, *array.shape[2:]), fill, array.dtype)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, array.shape[0]), min(y + h, array.shape[1])
    out[x0 - x : x1 - x, y0 - y : y1 - y] = array[x0:x1, y0:y1]
    return out


_OME_UNIT_UM = {"µm": 1.0, "um": 1.0, "micrometer": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4}


def _ome_mpp(path: Path) -> tuple[float, float] | None:
    """Microns per pixel from an OME-TIFF's first ``Pixels`` element (PhysicalSizeX/Y and their units)."""
    import re

    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            xml = tif.ome_metadata if tif.is_ome else None
    except Exception:  # noqa: BLE001 -- no readable OME header: no pixel size from it
        return None
    pixels = re.search(r"<(?:\w+:)?Pixels\b([^>]*)>", xml or "")
    if pixels is None:
        return None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', pixels.group(1)))
    sizes = []
    for axis in "XY":
        value = _number(attrs.get(f"PhysicalSize{axis}"))
        scale = _OME_UNIT_UM.get(attrs.get(f"PhysicalSize{axis}Unit", "µm"))
        sizes.append(value * scale if value and value > 0 and scale else None)
    return (sizes[0], sizes[1] or sizes[0]) if sizes[0] else None


def _tiff_for_openslide(path: Path) -> bool:
    """True for a TIFF OpenSlide reads whole: 8-bit colour, levels as pages (not an OME-TIFF, no SubIFD pyramid)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        rgb8 = page.dtype == np.uint8 and page.samplesperpixel in _RGB8
        return rgb8 and not tif.is_ome and not page.subifds


def _open_handle(path: Path, backend: str) -> Any:
    if backend == "openslide":
        import openslide

        return openslide.OpenSlide(str(path))
    import tiffslide

    return tiffslide.TiffSlide(str(path))


def _backends(path: Path) -> list[str]:
    """Backends to try, in order: tiffslide alone for TIFFs OpenSlide would read only in part (not 8-bit colour,
    OME-TIFF, SubIFD pyramids), OpenSlide first otherwise."""
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            whole = _tiff_for_openslide(path)
        except Exception as exc:
            raise ReadError(f"not a readable TIFF ({one_line(exc, path)})", path) from exc
        return ["openslide", "tiffslide"] if whole else ["tiffslide"]
    return ["openslide", "tiffslide"]


def open_slide(path: str | os.PathLike[str], *, mpp: float | tuple[float, float] | None = None) -> Slide:
    """Open a whole-slide image lazily (SVS, NDPI, MRXS, SCN, BIF, generic and OME pyramidal TIFF, DICOM WSI).

    Parameters
    ----------
    path : path-like
        The slide file (for MIRAX the ``.mrxs`` file beside its folder; for DICOM one file of the series).
    mpp : float or (float, float), optional
        Microns per level-0 pixel, overriding (or supplying) the file's.

    Raises
    ------
    medseg.errors.ReadError
        Missing file, or a file no backend opens (each backend's reason is given).
    """
    p = Path(path)
    if not p.is_file():
        raise ReadError("no such file", p)
    reasons = []
    for backend in _backends(p):
        try:
            return Slide(_open_handle(p, backend), backend, str(p), mpp)
        except PASS_THROUGH:
            raise
        except GeometryError:
            raise
        except BaseException as exc:  # noqa: BLE001 -- each backend's own error types; the next one may read it
            reasons.append(f"{backend}: {one_line(exc, p)}")
    raise ReadError(f"not a slide medseg can open ({'; '.join(reasons)})", p)


def is_slide_file(path: str | os.PathLike[str]) -> bool:
    """True for a slide suffix, or a TIFF that is tiled with several resolution levels (a pyramid)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(SLIDE_SUFFIXES):
        return True
    if not name.endswith((".tif", ".tiff")) or not p.is_file():
        return False
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            return bool(series.keyframe.is_tiled) and len(series.levels) > 1
    except Exception:  # noqa: BLE001 -- an unreadable TIFF is not a slide; its reader reports it
        return False


def load_slide_overview(
    path: str | os.PathLike[str], *, max_side: int = OVERVIEW_MAX_SIDE, mpp: float | None = None, **_: Any
) -> Image:
    """The reader of the ``slide`` format (``medseg.load``): the overview, never a whole full-resolution level.

    ``meta["downsample"]`` says how much smaller than level 0 it is; use
    :func:`open_slide` for regions at full resolution.
    """
    with open_slide(path, mpp=mpp) as slide:
        image = slide.overview(max_side)
    image.warnings.append(
        f"whole-slide image: this is an overview at downsample {image.meta['downsample']:.4g}; "
        "medseg.io.open_slide reads full-resolution regions"
    )
    if not slide.spacing_known:
        image.warnings.append("pixel size unknown: pass mpp= (um per pixel) to measure in micrometres")
    return image


__all__ = ["SLIDE_SUFFIXES", "Slide", "SlideLevel", "is_slide_file", "load_slide_overview", "open_slide"]
