"""The Image type: geometry maths against SimpleITK's definitions."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import GeometryError
from medseg.io.image import Image


def _oblique_direction() -> np.ndarray:
    a, b = np.deg2rad(20), np.deg2rad(-35)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def test_index_world_mapping_matches_simpleitk() -> None:
    direction = _oblique_direction()
    img = Image(np.zeros((7, 5, 3), np.int16), spacing=(0.7, 0.9, 2.5), origin=(-10.0, 4.0, 33.0), direction=direction)
    ref = sitk.Image(7, 5, 3, sitk.sitkInt16)
    ref.SetSpacing(img.spacing)
    ref.SetOrigin(img.origin)
    ref.SetDirection(direction.ravel().tolist())
    for idx in [(0, 0, 0), (6, 4, 2), (3, 1, 2)]:
        assert np.allclose(img.index_to_world(idx), ref.TransformIndexToPhysicalPoint(idx))
        assert np.allclose(img.world_to_index(ref.TransformIndexToPhysicalPoint(idx)), idx)


def test_affine_ras_flips_first_two_world_axes() -> None:
    img = Image(np.zeros((2, 2, 2)), spacing=(1, 2, 3), origin=(10, 20, 30))
    assert np.allclose(img.affine_ras @ [1, 1, 1, 1], [-11, -22, 33, 1])


@pytest.mark.parametrize(
    ("direction", "code"),
    [(np.eye(3), "LPS"), (np.diag([-1, -1, 1]), "RAS"), (np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]]), "PIL")],
)
def test_orientation_codes_agree_with_simpleitk(direction: np.ndarray, code: str) -> None:
    img = Image(np.zeros((2, 2, 2)), direction=direction)
    assert img.orientation == code
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(direction.ravel().astype(float).tolist()) == code


def test_same_grid_and_with_array() -> None:
    img = Image(np.zeros((4, 4, 4), np.float32), spacing=(1, 1, 2), modality="CT", intensity_unit="HU")
    labels = img.with_array(np.ones((4, 4, 4), np.uint8), intensity_unit="")
    assert labels.same_grid(img) and labels.modality == "CT" and labels.intensity_unit == ""
    shifted = Image(np.zeros((4, 4, 4)), spacing=(1, 1, 2), origin=(0.0, 0.0, 0.5))
    assert not img.same_grid(shifted)


def test_channels_and_bad_geometry() -> None:
    rgb = Image(np.zeros((5, 6, 3), np.uint8), channel_axis=True)
    assert rgb.ndim == 2 and rgb.shape == (5, 6) and rgb.n_channels == 3 and rgb.orientation == "LP"
    with pytest.raises(GeometryError, match="positive"):
        Image(np.zeros((3, 3)), spacing=(1.0, 0.0))
    with pytest.raises(GeometryError, match="spatial axes"):
        Image(np.zeros(5))
