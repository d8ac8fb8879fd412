"""Conversion between :class:`~medseg.io.image.Image` and ``SimpleITK.Image``.

Both use LPS world coordinates and the same index order ``(x, y, z)``, so the
conversion only transposes the array (SimpleITK's numpy view is ``[z, y, x]``)
and copies spacing, origin and direction. Multi-component SimpleITK images
(RGB, vectors) map to an Image with a trailing channel axis; a 4D SimpleITK
image maps to a 3D Image whose channel axis holds the fourth dimension.

Examples
--------
>>> import numpy as np
>>> img = Image(np.arange(24, dtype=np.int16).reshape(4, 3, 2), spacing=(0.5, 0.5, 2.0))
>>> s = to_sitk(img)
>>> s.GetSize(), s.GetSpacing()
((4, 3, 2), (0.5, 0.5, 2.0))
>>> bool((from_sitk(s).array == img.array).all())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from medseg.errors import GeometryError
from medseg.io.image import Image


def to_sitk(image: Image) -> sitk.Image:
    """Return ``image`` as a ``SimpleITK.Image`` with identical voxels and geometry.

    A channel axis becomes SimpleITK's pixel components (a vector image).
    Boolean arrays are stored as ``uint8``.
    """
    arr = image.array.astype(np.uint8) if image.array.dtype == bool else image.array
    nd = image.ndim
    # [x, y, z, (c)] -> [z, y, x, (c)]
    order = tuple(reversed(range(nd))) + ((nd,) if image.channel_axis else ())
    out = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(order)), isVector=image.channel_axis)
    out.SetSpacing([float(s) for s in image.spacing])
    out.SetOrigin([float(o) for o in image.origin])
    out.SetDirection(np.asarray(image.direction, dtype=float).ravel().tolist())
    return out


def from_sitk(img: sitk.Image, **fields: Any) -> Image:
    """Return a ``SimpleITK.Image`` as an :class:`Image` (extra ``fields`` go to the Image constructor).

    Raises
    ------
    medseg.errors.GeometryError
        For 1D or more than 4D images, which have no Image equivalent.
    """
    dim = img.GetDimension()
    if dim == 4:
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise GeometryError("4D images with vector pixels are not supported", fields.get("source"))
        return _from_sitk_4d(img, **fields)
    if dim not in (2, 3):
        raise GeometryError(f"an Image has 2 or 3 spatial axes, the file has {dim}", fields.get("source"))
    arr = sitk.GetArrayFromImage(img)  # [z, y, x, (c)]
    vector = img.GetNumberOfComponentsPerPixel() > 1
    order = tuple(reversed(range(dim))) + ((dim,) if vector else ())
    return Image(
        arr.transpose(order),
        spacing=img.GetSpacing(),
        origin=img.GetOrigin(),
        direction=np.asarray(img.GetDirection(), dtype=float).reshape(dim, dim),
        channel_axis=vector,
        **fields,
    )


def _from_sitk_4d(img: sitk.Image, **fields: Any) -> Image:
    """A 4D scalar image (x, y, z, t) as a 3D Image with the fourth axis as channels."""
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(4, 4)
    arr = sitk.GetArrayFromImage(img)  # [t, z, y, x]
    return Image(
        arr.transpose(3, 2, 1, 0),
        spacing=img.GetSpacing()[:3],
        origin=img.GetOrigin()[:3],
        direction=direction[:3, :3],
        channel_axis=True,
        **fields,
    )
