"""Writing tiled pyramidal TIFF, tile by tile, so that no level is ever held in memory whole.

The layout is OpenSlide's "generic tiled TIFF": one tiled page per level,
largest first, each later one a reduced-resolution image (``SubfileType`` 1),
with the pixel size in X/YResolution (pixels per centimetre). OpenSlide reads
8-bit RGB pyramids written this way; tiffslide reads them all (16-bit grey,
uint32 label pyramids). Arrays are medseg's ``[x, y(, channel)]``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from medseg.atomic import atomic_path
from medseg.errors import WriteError
from medseg.io.image import Image

RegionReader = Callable[[int, int, int, int, int], np.ndarray]
"""``(level, x, y, width, height) -> [x, y(, c)]`` pixels of a level (level px), the writer's source of tiles."""


def level_sizes(width: int, height: int, tile: int, min_side: int | None = None) -> list[tuple[int, int]]:
    """(width, height) of each level, halving until the whole image fits in one tile (or ``min_side``)."""
    stop = min_side or tile
    sizes = [(width, height)]
    while max(sizes[-1]) > stop:
        w, h = sizes[-1]
        sizes.append((max(1, math.ceil(w / 2)), max(1, math.ceil(h / 2))))
    return sizes


def write_pyramid(
    path: str | os.PathLike[str],
    read: RegionReader,
    size: tuple[int, int],
    dtype: np.dtype | type,
    *,
    channels: int = 1,
    mpp: tuple[float, float] | None = None,
    tile: int = 256,
    compression: str = "zlib",
    levels: int | None = None,
) -> Path:
    """Write a pyramidal TIFF whose tiles come from ``read``, one tile in memory at a time, atomically.

    Parameters
    ----------
    read : callable
        ``read(level, x, y, w, h)`` gives the pixels of a rectangle of that level.
    size : (int, int)
        Level-0 (width, height), px.
    channels : int
        1 (grey, labels) or 3 (RGB).
    mpp : (float, float), optional
        Microns per level-0 pixel, stored as the resolution of each level.
    compression : str
        ``"zlib"`` (lossless), ``"jpeg"`` (8-bit RGB), or any tifffile codec name.
    levels : int, optional
        Write only the first ``levels`` levels (1: a plain tiled TIFF); default all, down to one tile.
    """
    import tifffile

    p = Path(path)
    dtype = np.dtype(dtype)
    sizes = level_sizes(*size, tile)[:levels]
    raw = size[0] * size[1] * channels * dtype.itemsize
    try:
        with atomic_path(p) as tmp, tifffile.TiffWriter(tmp, bigtiff=raw > 2**31) as tw:
            for k, (w, h) in enumerate(sizes):
                options: dict[str, object] = {}
                if mpp is not None:
                    ds = size[0] / w
                    options.update(resolution=(1e4 / (mpp[0] * ds), 1e4 / (mpp[1] * ds)), resolutionunit="CENTIMETER")
                tw.write(
                    _tiles(read, k, w, h, tile, dtype, channels),
                    shape=(h, w, channels) if channels > 1 else (h, w),
                    dtype=dtype,
                    tile=(tile, tile),
                    photometric="rgb" if channels == 3 else "minisblack",
                    compression=compression,
                    subfiletype=0 if k == 0 else 1,
                    **options,
                )
    except OSError as exc:
        raise WriteError(f"cannot write ({exc})", p) from exc
    return p


def _tiles(read: RegionReader, level: int, w: int, h: int, tile: int, dtype: np.dtype, channels: int) -> Iterator[np.ndarray]:
    """The level's tiles in file order (rows of tiles, top first), each padded to the full tile size."""
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            tw, th = min(tile, w - x), min(tile, h - y)
            block = np.asarray(read(level, x, y, tw, th), dtype=dtype)
            out = np.zeros((tile, tile, channels) if channels > 1 else (tile, tile), dtype)
            out[:th, :tw] = np.swapaxes(block, 0, 1)
            yield out


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks of the spatial axes (partial blocks at the end averaged as they are)."""
    if factor == 1:
        return array
    out = array.astype(np.float64)
    for axis in (0, 1):
        starts = np.arange(0, out.shape[axis], factor)
        counts = np.diff(np.append(starts, out.shape[axis])).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.add.reduceat(out, starts, axis=axis) / counts
    return np.round(out).astype(array.dtype) if array.dtype.kind in "ui" else out.astype(array.dtype)


def save_pyramid(image: Image, path: str | os.PathLike[str], *, tile: int = 256, compression: str = "zlib") -> Path:
    """Write a 2D image in memory as a pyramidal TIFF (levels by block mean, or by taking every 2nd pixel for labels)."""
    if image.ndim != 2:
        raise WriteError(f"a pyramid holds 2D images, this one is {image.ndim}D", path)
    arr = image.array
    is_labels = hasattr(image, "label_names")

    def read(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        f = 2**level
        region = arr[x * f : (x + w) * f, y * f : (y + h) * f]
        if f == 1 or is_labels:
            return region[::f, ::f]
        return block_mean(region, f)

    mpp = (image.spacing[0] * 1000.0, image.spacing[1] * 1000.0) if image.spacing_known else None
    return write_pyramid(path, read, image.shape, arr.dtype, channels=image.n_channels, mpp=mpp, tile=tile,
                         compression=compression)


__all__ = ["RegionReader", "block_mean", "level_sizes", "save_pyramid", "write_pyramid"]
