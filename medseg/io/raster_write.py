"""Writing 2D pictures and label maps as PNG (Pillow) and 2D/3D TIFF (tifffile).

Pixels are written in the array's own order: ``array[i, j]`` (column ``i``,
row ``j``) becomes file pixel (x = i, y = j), the convention
:func:`medseg.io.raster.load_raster` reads back. A mask segmented from a PNG
therefore overlays that PNG pixel for pixel in any viewer. These formats hold
no origin or direction, only the pixel size: PNG as its ``pHYs`` chunk, TIFF
as X/YResolution in pixels per centimetre (ImageJ's ``spacing`` and ``unit``
for the slice distance of stacks).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medseg.atomic import atomic_path
from medseg.errors import WriteError
from medseg.io.image import Image

_MM_PER_INCH = 25.4


def _stored_array(image: Image, path: Path, *, allow_16bit_colour: bool) -> np.ndarray:
    """The pixels in file order (rows first), in the smallest type the format holds losslessly."""
    arr = image.array
    if arr.dtype == bool:
        arr = arr.view(np.uint8)
    if image.channel_axis:
        if image.n_channels not in (3, 4) or (arr.dtype != np.uint8 and not allow_16bit_colour):
            raise WriteError(f"cannot write {image.n_channels} channels of {arr.dtype} as a picture", path)
        return np.ascontiguousarray(np.swapaxes(arr, 0, 1) if image.ndim == 2 else arr.transpose(2, 1, 0, 3))
    if arr.dtype.kind in "ui":
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0:
            raise WriteError(f"cannot write negative values ({lo}) as a picture", path)
        fits = next((t for t in (np.uint8, np.uint16) if hi <= np.iinfo(t).max), None)
        if fits is None:
            raise WriteError(f"values up to {hi} do not fit a 16-bit picture; write NIfTI instead", path)
        arr = arr.astype(fits, copy=False)
    elif arr.dtype.kind != "f" or path.suffix.lower() == ".png":
        raise WriteError(f"cannot write {arr.dtype} pixels as {path.suffix} (integers only; use TIFF or NIfTI)", path)
    return np.ascontiguousarray(arr.T)


def save_raster(image: Image, path: str | os.PathLike[str]) -> Path:
    """Write a 2D image as PNG, or a 2D/3D image as TIFF, atomically.

    Label maps are stored as 8-bit grey when every value is below 256, else
    16-bit; RGB(A) pictures as 8-bit colour. The pixel size (mm) is stored when
    ``image.spacing_known``.

    Raises
    ------
    medseg.errors.WriteError
        Negative, too large or fractional values for PNG, channels other than
        RGB(A), a 3D image as PNG, or a file that cannot be written.
    """
    p = Path(path)
    suffix = p.name.lower().rsplit(".", 1)[-1]
    tiff = suffix in ("tif", "tiff")
    if not tiff and image.ndim != 2:
        raise WriteError(f"PNG holds 2D images; this one is {image.ndim}D (use .tif or .nii.gz)", p)
    pixels = _stored_array(image, p, allow_16bit_colour=tiff)
    try:
        with atomic_path(p) as tmp:
            if tiff:
                _write_tiff(pixels, image, tmp)
            else:
                _write_png(pixels, image, tmp)
    except OSError as exc:
        raise WriteError(f"cannot write ({exc})", p) from exc
    return p


def _write_png(pixels: np.ndarray, image: Image, tmp: Path) -> None:
    from PIL import Image as PILImage

    pil = PILImage.fromarray(pixels)  # uint8 grey "L", RGB(A), uint16 grey "I;16"
    dpi = tuple(_MM_PER_INCH / s for s in image.spacing) if image.spacing_known else None
    pil.save(tmp, format="PNG", **({"dpi": dpi} if dpi else {}))


def _write_tiff(pixels: np.ndarray, image: Image, tmp: Path) -> None:
    import tifffile

    options: dict[str, object] = {"photometric": "rgb" if image.channel_axis else "minisblack"}
    if image.spacing_known:
        x_mm, y_mm = image.spacing[:2]
        if image.ndim == 3:  # ImageJ hyperstack: pixels per mm, slice spacing in mm
            options.update(imagej=True, resolution=(1 / x_mm, 1 / y_mm),
                           metadata={"spacing": image.spacing[2], "unit": "mm", "axes": "ZYXS" if image.channel_axis else "ZYX"})
            options.pop("photometric")
        else:
            options.update(resolution=(10 / x_mm, 10 / y_mm), resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp, pixels, **options)
