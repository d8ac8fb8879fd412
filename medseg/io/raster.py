"""2D raster images (PNG, JPEG, BMP) via Pillow and TIFF (incl. multi-page 3D stacks) via tifffile.

Arrays follow the :class:`~medseg.io.image.Image` convention, ``[column, row]``
(and ``[column, row, slice]`` for stacks), with colour samples in a trailing
channel axis. Pixel spacing comes from the caller or from TIFF resolution tags
(converted to mm; ImageJ's unit and slice spacing are honoured), from a PNG
``pHYs`` chunk in pixels per metre, or from a JPEG JFIF density in dots per inch
or centimetre. Resolutions that encode 72 or 96 dpi are software defaults, not
pixel sizes, and are ignored, as are BMP resolutions. Without a trustworthy
spacing the Image has ``spacing_known=False`` and says so in ``warnings``;
medseg never silently assumes 1 mm.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import GeometryError, ReadError
from medseg.io.guard import DEFLATE_MAX_RATIO, check_declared_size, decoding
from medseg.io.image import Image

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")

_UNIT_MM = {  # ImageJ / OME length units -> mm
    "mm": 1.0,
    "millimeter": 1.0,
    "cm": 10.0,
    "centimeter": 10.0,
    "m": 1000.0,
    "meter": 1000.0,
    "inch": 25.4,
    "micron": 1e-3,
    "um": 1e-3,
    "\u00b5m": 1e-3,
    "\\u00b5m": 1e-3,
    "nm": 1e-6,
    "nanometer": 1e-6,
}
_TIFF_RESUNIT_MM = {2: 25.4, 3: 10.0}  # ResolutionUnit INCH, CENTIMETER
_SCREEN_DPI = (72.0, 96.0)  # software defaults, not physical pixel sizes
_CHANNEL_AXES = "SC"  # tifffile: samples (RGB) and channels
_DEPTH_AXES = "ZQI"  # tifffile: slices, unknown pages, image sequence
# palette ("P") images: grey palettes give grey values, colour palettes keep their indices (label masks)
_PILLOW_CONVERT = {"PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "1": "L"}
# TIFF Compression -> the most a stored byte can expand to when decoded (NONE, deflate, PackBits); other codecs
# have no useful bound, so only the memory check applies to them
_TIFF_MAX_RATIO = {1: 1, 8: DEFLATE_MAX_RATIO, 32946: DEFLATE_MAX_RATIO, 32773: 64}


def load_raster(
    path: str | os.PathLike[str],
    *,
    spacing: float | Sequence[float] | None = None,
    modality: str | None = None,
) -> Image:
    """Read a PNG, JPEG, BMP or TIFF image (TIFF stacks give 3D images).

    Parameters
    ----------
    path : path-like
        The image file; opened read-only.
    spacing : float or sequence of float, optional
        Pixel (voxel) size in mm, one value for all axes or one per spatial
        axis ``(column, row[, slice])``. Overrides any spacing in the file.
    modality : str, optional
        DICOM modality code to attach (``"DX"``, ``"SM"``, ...).

    Returns
    -------
    Image
        ``meta["spacing_source"]`` is ``"caller"``, ``"tiff_resolution"``,
        ``"imagej"``, ``"png_phys"``, ``"jfif_density"`` or ``"none"`` (then
        ``spacing_known`` is False).

    Raises
    ------
    medseg.errors.ReadError
        Missing, truncated or corrupt file, or a TIFF layout medseg does not map
        to an image (e.g. a time series).
    """
    p = Path(path)
    if not p.is_file():
        raise ReadError("no such file", p)
    name = p.name.lower()
    if name.endswith(TIFF_SUFFIXES):
        array, channel_axis, file_spacing, source, warnings, meta = _read_tiff(p)
    elif name.endswith(PILLOW_SUFFIXES):
        array, channel_axis, meta = _read_pillow(p)
        warnings = []
        file_spacing, source = _pillow_spacing(meta.pop("density"), warnings)
    else:
        raise ReadError(f"not a raster image (expected one of {', '.join(PILLOW_SUFFIXES + TIFF_SUFFIXES)})", p)
    nd = array.ndim - int(channel_axis)
    if spacing is not None:
        file_spacing, source = _caller_spacing(spacing, nd, p), "caller"
    known = file_spacing is not None
    if not known:
        axes = "column_mm, row_mm" + (", slice_mm" if nd == 3 else "")
        warnings.append(f"pixel spacing unknown: pass spacing=({axes}) to measure in physical units")
    meta["spacing_source"] = source
    return Image(
        array,
        spacing=file_spacing or (),
        modality=(modality or "").upper(),
        spacing_known=known,
        channel_axis=channel_axis,
        meta=meta,
        warnings=warnings,
        source=str(p),
    )


def _caller_spacing(spacing: float | Sequence[float], nd: int, path: Path) -> tuple[float, ...]:
    values = (float(spacing),) * nd if np.isscalar(spacing) else tuple(float(s) for s in spacing)  # type: ignore[arg-type]
    if len(values) != nd or not all(np.isfinite(v) and v > 0 for v in values):
        raise GeometryError(f"spacing must be one positive value or {nd} of them (mm), got {spacing!r}", path)
    return values


def _read_pillow(path: Path) -> tuple[np.ndarray, bool, dict[str, Any]]:
    from PIL import Image as PILImage

    with decoding(path, "corrupt or truncated image"), PILImage.open(path) as pil:
        pil.load()
        fmt, mode = pil.format or path.suffix.lstrip(".").upper(), pil.mode
        density = _pillow_density(fmt, pil.info)
        if mode in _PILLOW_CONVERT:
            pil = pil.convert(_PILLOW_CONVERT[mode])
        array = np.asarray(pil)
        if mode == "P":
            array = _grey_palette_values(array, pil.getpalette())
    channel_axis = array.ndim == 3
    return np.swapaxes(array, 0, 1), channel_axis, {"format": fmt, "mode": mode, "density": density}


def _pillow_density(fmt: str, info: dict[str, Any]) -> tuple[list[float], float, str] | None:
    """Stored pixel density ``(x, y)``, the length of its unit in mm, and its source name; None when absent."""
    if fmt == "PNG" and "dpi" in info:  # Pillow reports a pHYs chunk in metres (unit 1) only, as dots per inch
        return [round(float(d) / 0.0254) for d in info["dpi"]], 1000.0, "png_phys"
    if fmt == "JPEG" and info.get("jfif_unit") in (1, 2):
        return [float(d) for d in info["jfif_density"]], 25.4 if info["jfif_unit"] == 1 else 10.0, "jfif_density"
    return None


def _pillow_spacing(
    density: tuple[list[float], float, str] | None, warnings: list[str]
) -> tuple[tuple[float, ...] | None, str]:
    """Pixel size in mm from a PNG/JPEG density (see :func:`_pillow_density`), or None for none or a screen default.

    Whole pixels per metre cannot hold most pixel sizes exactly, so a PNG's is
    the shortest decimal that rounds to the stored density (2857 px/m -> 0.35 mm).
    """
    if density is None or min(density[0]) <= 0:
        return None, "none"
    per_unit, unit_mm, source = density
    if all(any(abs(d - dpi * unit_mm / 25.4) < 1 for dpi in _SCREEN_DPI) for d in per_unit):
        dpi = per_unit[0] * 25.4 / unit_mm
        what = "PNG pHYs" if source == "png_phys" else "JPEG JFIF"
        warnings.append(f"{what} resolution {dpi:.0f} dpi is a software default, not a pixel size: ignored")
        return None, "none"
    if source == "png_phys":
        return tuple(_shortest_mm(int(d)) for d in per_unit), source
    return tuple(unit_mm / d for d in per_unit), source


def _shortest_mm(per_metre: int) -> float:
    """The decimal pixel size (mm) with the fewest significant digits whose pixels per metre round to ``per_metre``."""
    exact = 1000.0 / per_metre
    for digits in range(1, 16):
        mm = float(f"{exact:.{digits}g}")
        if round(1000.0 / mm) == per_metre:
            return mm
    return exact


def _grey_palette_values(indices: np.ndarray, palette: list[int] | None) -> np.ndarray:
    """Grey values of a palette image whose palette is all grey; a colour palette keeps the indices (label maps)."""
    if not palette:
        return indices
    lut = np.asarray(palette, np.uint8).reshape(-1, 3)
    if indices.max(initial=0) >= len(lut) or not (lut == lut[:, :1]).all():
        return indices
    return lut[:, 0][indices]


def _read_tiff(
    path: Path,
) -> tuple[np.ndarray, bool, tuple[float, ...] | None, str, list[str], dict[str, Any]]:
    import tifffile

    with decoding(path, "corrupt or truncated TIFF"), tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        check_declared_size(
            path,
            series.nbytes,
            f"{' x '.join(map(str, series.shape))} {series.dtype}",
            present=path.stat().st_size,
            max_ratio=_TIFF_MAX_RATIO.get(int(series.keyframe.compression), float("inf")),
        )
        data, axes = series.asarray(), series.axes
        page = tif.pages[0]
        resolution = _tag(page, "XResolution"), _tag(page, "YResolution"), _tag(page, "ResolutionUnit")
        imagej = tif.imagej_metadata or {}
    if data.ndim != len(axes) or "X" not in axes or "Y" not in axes:
        raise ReadError(f"corrupt TIFF: pixel array of shape {data.shape} for axes {axes!r}", path)
    array, channel_axis = _tiff_layout(data, axes, path)
    warnings: list[str] = []
    spacing, source = _tiff_spacing(resolution, imagej, array.ndim - int(channel_axis), warnings)
    return array, channel_axis, spacing, source, warnings, {"format": "TIFF", "tiff_axes": axes}


def _tag(page: Any, name: str) -> Any:
    tag = page.tags.get(name)
    return None if tag is None else tag.value


def _tiff_layout(data: np.ndarray, axes: str, path: Path) -> tuple[np.ndarray, bool]:
    """Reorder tifffile's axes (e.g. ``ZYX``, ``YXS``, ``CYX``) to ``X, Y[, Z][, C]``."""
    keep = [i for i, n in enumerate(data.shape) if n > 1 or axes[i] in "XY"]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    channels = [a for a in axes if a in _CHANNEL_AXES]
    depth = [a for a in axes if a in _DEPTH_AXES]
    other = set(axes) - set("XY") - set(channels) - set(depth)
    if other or len(channels) > 1 or len(depth) > 1:
        raise ReadError(
            f"unsupported TIFF layout {axes} {data.shape} (medseg reads YX, ZYX and colour/channel axes)", path
        )
    order = [axes.index("X"), axes.index("Y"), *(axes.index(a) for a in depth + channels)]
    return data.transpose(order), bool(channels)


def _tiff_spacing(
    resolution: tuple[Any, Any, Any], imagej: dict[str, Any], nd: int, warnings: list[str]
) -> tuple[tuple[float, ...] | None, str]:
    """Pixel size in mm from TIFF XResolution/YResolution (pixels per unit) and ResolutionUnit or ImageJ's unit."""
    x_res, y_res, unit = resolution
    per_pixel = [_finite(r) for r in (x_res, y_res)]
    if any(r is None or r <= 0 for r in per_pixel):
        return None, "none"
    unit_code = int(_finite(getattr(unit, "value", unit)) or 1)
    ij_unit = str(imagej.get("unit", "")).strip().lower()
    if unit_code in _TIFF_RESUNIT_MM:
        if unit_code == 2 and all(r in _SCREEN_DPI for r in per_pixel):
            warnings.append(f"TIFF resolution {per_pixel[0]:g} dpi is a software default, not a pixel size: ignored")
            return None, "none"
        mm, source = _TIFF_RESUNIT_MM[unit_code], "tiff_resolution"
    elif ij_unit in _UNIT_MM:
        mm, source = _UNIT_MM[ij_unit], "imagej"
    else:
        return None, "none"
    spacing = [mm / r for r in per_pixel]  # type: ignore[operator]
    if nd == 3:
        z = _finite(imagej.get("spacing")) if ij_unit in _UNIT_MM else None
        if z is None or z <= 0:
            warnings.append("TIFF stack without slice spacing: spacing unknown")
            return None, "none"
        spacing.append(z * _UNIT_MM[ij_unit])
    return tuple(spacing), source


def _finite(value: Any) -> float | None:
    """A TIFF or ImageJ value (number, or rational ``(numerator, denominator)``) as a finite float, else None."""
    try:
        out = float(value[0] / value[1] if isinstance(value, tuple) and len(value) == 2 else value)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        return None
    return out if np.isfinite(out) else None
