"""Synthetic sample data with exact ground truth, generated deterministically from a seed.

Three small data sets in the Medical Segmentation Decathlon layout
(``dataset.json`` + ``imagesTr/labelsTr/imagesTs/labelsTs``), so that every
stage of medseg (reading, training, inference, measurement, evaluation) can be
run and checked end to end without downloading anything:

* ``ct_organs/``: abdominal CT-like phantoms in HU (int16 NIfTI) with organ
  label maps; the first test case also as a DICOM series in ``ct_organs_dicom/``.
* ``xray_lungs/``: chest radiograph-like 8-bit PNGs with lung-field masks.
* ``nuclei/``: fluorescence-like uint16 TIFFs with touching nuclei and their
  instance label maps; pixel size in the TIFF resolution tags.

The same ``seed`` gives the same voxels on every run (``medseg sample-data OUT``
regenerates the committed ``sample_data/``, seed 0).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.atomic import atomic_path, write_text_atomic
from medseg.io.image import Image
from medseg.io.volumes import save_volume

CT_LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney_left": 3, "kidney_right": 4, "spine": 5, "lungs": 6}
CT_SHAPE = (96, 80, 40)  # x (patient left), y (posterior), z (superior)
CT_SPACING_MM = (3.0, 3.0, 4.0)
CT_CASES = (6, 2)  # training, test

XRAY_SHAPE = (256, 256)  # columns, rows
XRAY_SPACING_MM = (1.4, 1.4)
XRAY_CASES = (6, 2)

NUCLEI_SHAPE = (256, 256)  # columns, rows
NUCLEI_PIXEL_UM = 0.5
NUCLEI_CASES = (4, 2)

_Grid = tuple[np.ndarray, np.ndarray, np.ndarray]


def generate(out_dir: str | os.PathLike[str], seed: int = 0) -> list[Path]:
    """Write the sample data sets into ``out_dir``; returns the folders and files written at its top level.

    Parameters
    ----------
    out_dir : path-like
        Created if needed; existing files of the same names are replaced.
    seed : int
        Each data set draws from its own stream derived from ``seed``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ct_test_image = _write_ct_organs(out / "ct_organs", np.random.default_rng([seed, 1]))
    from medseg.io.dicom_write import save_dicom_series

    save_dicom_series(
        ct_test_image,
        out / "ct_organs_dicom",
        series_description="medseg CT phantom (ct_organs test case 000)",
        seed=f"medseg-sample-data-{seed}",
        body_part="ABDOMEN",
        overwrite=True,
    )
    _write_xray_lungs(out / "xray_lungs", np.random.default_rng([seed, 2]))
    _write_nuclei(out / "nuclei", np.random.default_rng([seed, 3]))
    write_text_atomic(out / "README.md", README.format(seed=seed))
    return [out / n for n in ("ct_organs", "ct_organs_dicom", "xray_lungs", "nuclei", "README.md")]


# ---- MSD layout ---------------------------------------------------------------------------------------------------
def _dataset_json(folder: Path, n_train: int, n_test: int, ext: str, **fields: object) -> list[tuple[Path, Path]]:
    """Write ``dataset.json`` for ``n_train + n_test`` cases; returns their (image, label) paths, training first."""
    names = [f"case_{i:03d}{ext}" for i in range(n_train + n_test)]
    entries = [
        {"image": f"./images{part}/{name}", "label": f"./labels{part}/{name}"}
        for part, batch in (("Tr", names[:n_train]), ("Ts", names[n_train:]))
        for name in batch
    ]
    doc = {
        **fields,
        "numTraining": n_train,
        "numTest": n_test,
        "training": entries[:n_train],
        "test": entries[n_train:],
    }
    write_text_atomic(folder / "dataset.json", json.dumps(doc, indent=2) + "\n")
    return [(folder / e["image"], folder / e["label"]) for e in entries]


def _write_png(path: Path, array_xy: np.ndarray) -> None:
    from PIL import Image as PILImage

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        PILImage.fromarray(np.ascontiguousarray(array_xy.T)).save(tmp, format="PNG")


def _write_tiff(path: Path, array_xy: np.ndarray, pixel_um: float) -> None:
    import tifffile

    px_per_cm = 1e4 / pixel_um
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            np.ascontiguousarray(array_xy.T),
            resolution=(px_per_cm, px_per_cm),
            resolutionunit="CENTIMETER",
            compression="zlib",
            metadata=None,
        )


# ---- CT phantom ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Ellipsoid:
    center: tuple[float, float, float]  # LPS mm
    radii: tuple[float, float, float]  # mm
    angle_deg: float = 0.0  # rotation about the z axis

    def mask(self, grid: _Grid) -> np.ndarray:
        x, y, z = (g - c for g, c in zip(grid, self.center, strict=True))
        a = np.deg2rad(self.angle_deg)
        u, v = np.cos(a) * x + np.sin(a) * y, -np.sin(a) * x + np.cos(a) * y
        return (u / self.radii[0]) ** 2 + (v / self.radii[1]) ** 2 + (z / self.radii[2]) ** 2 <= 1.0

    def jittered(self, rng: np.random.Generator, shift_mm: float, scale: float, turn_deg: float) -> _Ellipsoid:
        s = rng.uniform(1 - scale, 1 + scale, 3)
        return _Ellipsoid(
            tuple(np.add(self.center, rng.uniform(-shift_mm, shift_mm, 3))),
            tuple(np.multiply(self.radii, s)),
            self.angle_deg + rng.uniform(-turn_deg, turn_deg),
        )

    def shrunk(self, mm: float) -> _Ellipsoid:
        return _Ellipsoid(self.center, tuple(max(r - mm, 1.0) for r in self.radii), self.angle_deg)


_ORGANS = {  # name -> ellipsoid in a body centred on x = y = 0, diaphragm near z = +40 mm
    "liver": _Ellipsoid((-55.0, -5.0, 10.0), (75.0, 68.0, 60.0), 10.0),
    "spleen": _Ellipsoid((82.0, 35.0, 25.0), (26.0, 42.0, 48.0), -30.0),
    "kidney_left": _Ellipsoid((64.0, 48.0, -28.0), (27.0, 31.0, 45.0), -20.0),
    "kidney_right": _Ellipsoid((-64.0, 48.0, -38.0), (27.0, 31.0, 45.0), 20.0),
    "lung_right": _Ellipsoid((-68.0, 12.0, 112.0), (52.0, 66.0, 82.0)),
    "lung_left": _Ellipsoid((68.0, 12.0, 116.0), (47.0, 64.0, 80.0)),
    "heart": _Ellipsoid((15.0, -28.0, 106.0), (56.0, 44.0, 46.0), 15.0),
}


def ct_phantom(rng: np.random.Generator) -> tuple[Image, Image]:
    """One abdominal CT-like phantom in HU and its label map (values of :data:`CT_LABELS`).

    Painted structure by structure, later ones over earlier ones: subcutaneous
    fat, muscle, bowel gas, liver, spleen, kidneys (cortex and medulla), aorta
    and vena cava, lungs, heart, vertebrae and ribs; then partial-volume blur
    and Gaussian noise. Heart, vessels, ribs, fat and gas are unlabelled.
    """
    origin = tuple(-(n - 1) / 2 * s for n, s in zip(CT_SHAPE, CT_SPACING_MM, strict=True))
    shift = rng.uniform(-6, 6, 3)  # where the scan's field of view sits, mm
    shift[2] += rng.uniform(-12, 12)
    axes = [o + s * np.arange(n) - d for o, s, n, d in zip(origin, CT_SPACING_MM, CT_SHAPE, shift, strict=True)]
    grid: _Grid = tuple(np.meshgrid(*axes, indexing="ij", sparse=True))  # type: ignore[assignment]
    x, y, z = grid
    half_w, half_d = 130 * rng.uniform(0.92, 1.06), 95 * rng.uniform(0.92, 1.06)  # body outline, mm
    fat = rng.uniform(10, 22)  # subcutaneous fat thickness, mm
    skin = np.broadcast_to((x / half_w) ** 2 + ((y - 5) / half_d) ** 2 <= 1, CT_SHAPE)
    inside = np.broadcast_to((x / (half_w - fat)) ** 2 + ((y - 5) / (half_d - fat)) ** 2 <= 1, CT_SHAPE)
    hu = np.where(skin, rng.normal(-100, 8), -1000.0).astype(np.float32)
    labels = np.zeros(CT_SHAPE, np.uint8)

    def paint(mask: np.ndarray, value: float, label: int = 0) -> None:
        """Set HU and label where ``mask`` lies inside the muscle wall."""
        mask = np.broadcast_to(mask, CT_SHAPE) & inside
        hu[mask] = value
        labels[mask] = label

    paint(inside, rng.normal(40, 4))
    for _ in range(rng.integers(4, 9)):  # gas in bowel loops, anterior abdomen
        gas = _Ellipsoid(
            (rng.uniform(-60, 60), rng.uniform(-70, -25), rng.uniform(-90, 0)), tuple(rng.uniform(5, 12, 3))
        )
        paint(gas.mask(grid), -1000.0)

    organs = {name: shape.jittered(rng, 6.0, 0.1, 8.0) for name, shape in _ORGANS.items()}
    paint(organs["liver"].mask(grid), rng.normal(85, 8), CT_LABELS["liver"])
    paint(organs["spleen"].mask(grid), rng.normal(50, 5), CT_LABELS["spleen"])
    for side in ("kidney_left", "kidney_right"):
        paint(organs[side].mask(grid), rng.normal(150, 10), CT_LABELS[side])
        paint(organs[side].shrunk(7.0).mask(grid), rng.normal(100, 8), CT_LABELS[side])
    paint((x - 15) ** 2 + (y - 15) ** 2 <= 11**2, rng.normal(200, 15))  # aorta, contrast-enhanced
    paint((x + 22) ** 2 + (y - 15) ** 2 <= 12**2, rng.normal(120, 10))  # inferior vena cava
    lung_hu = rng.normal(-850, 20)
    for side in ("lung_right", "lung_left"):
        paint(organs[side].mask(grid), lung_hu, CT_LABELS["lungs"])
    paint(organs["heart"].mask(grid), rng.normal(45, 5))

    cortical, cancellous = rng.normal(800, 80), rng.normal(260, 25)
    spine_y = 42.0 + rng.uniform(-4, 4)
    level = np.mod(z + rng.uniform(0, 30), 30.0) < 25.0  # 25 mm vertebrae, 5 mm discs
    paint((x**2 + (y - spine_y) ** 2 <= 7**2) & ~level, 80.0)  # discs, unlabelled soft tissue
    paint((x**2 + (y - spine_y) ** 2 <= 19**2) & level, cortical, CT_LABELS["spine"])  # vertebral bodies
    paint((x**2 + (y - spine_y) ** 2 <= 15**2) & level, cancellous, CT_LABELS["spine"])
    paint((np.abs(x) <= 5) & (y > spine_y + 19) & (y < spine_y + 42) & level, cortical, CT_LABELS["spine"])
    paint((np.abs(x) <= 30) & (np.abs(y - spine_y - 10) <= 2.5) & level, cortical, CT_LABELS["spine"])

    ribs = np.mod(z + rng.uniform(0, 26), 26.0) < 8.0
    ring = (x / (half_w - fat - 3)) ** 2 + ((y - 5) / (half_d - fat - 3)) ** 2
    paint((ring <= 1) & (ring >= 0.84) & ribs & (z > -30) & (np.abs(x) > 30), rng.normal(550, 50))

    hu = ndimage.gaussian_filter(hu, sigma=0.6) + rng.normal(0, rng.uniform(8, 16), CT_SHAPE)
    geometry = {"spacing": CT_SPACING_MM, "origin": origin}
    image = Image(
        np.rint(hu).clip(-1024, 3071).astype(np.int16),
        modality="CT",
        intensity_unit="HU",
        meta={"BodyPartExamined": "ABDOMEN"},
        **geometry,
    )
    return image, Image(labels, **geometry)


def _write_ct_organs(folder: Path, rng: np.random.Generator) -> Image:
    """Write the CT data set; returns the first test image (also written as DICOM)."""
    cases = _dataset_json(
        folder,
        *CT_CASES,
        ".nii.gz",
        name="ct_organs",
        description="Synthetic abdominal CT phantoms (HU) with organ labels, generated by medseg.sample_data",
        reference="medseg sample data (synthetic, exact ground truth)",
        licence="Apache-2.0",
        tensorImageSize="3D",
        modality={"0": "CT"},
        labels={str(v): k for k, v in CT_LABELS.items()},
    )
    images = []
    for image_path, label_path in cases:
        image, labels = ct_phantom(rng)
        save_volume(image, image_path)
        save_volume(labels, label_path)
        images.append(image)
    return images[CT_CASES[0]]


# ---- chest radiograph ---------------------------------------------------------------------------------------------
def xray_phantom(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One PA chest radiograph-like image (uint8, bright = dense) and its lung-field mask (0/1), both ``[x, y]``.

    The image's left side is the patient's right, as a radiologist views a PA film.
    """
    nx, ny = XRAY_SHAPE
    u = ((np.arange(nx) - nx / 2) / (nx / 2))[:, None] + rng.uniform(-0.03, 0.03)
    v = ((np.arange(ny) - ny / 2) / (ny / 2))[None, :] + rng.uniform(-0.03, 0.03)
    scale = rng.uniform(0.92, 1.06)

    def ellipse(cu: float, cv: float, au: float, av: float) -> np.ndarray:
        return ((u - cu) / (au * scale)) ** 2 + ((v - cv) / (av * scale)) ** 2 <= 1.0

    thorax = ellipse(0.0, 0.15, 0.86, 1.05) | ellipse(0.0, -0.8, 1.0, 0.3)  # chest and shoulders
    heart_u, heart_w = 0.1 + rng.uniform(-0.03, 0.03), 0.3 * rng.uniform(0.9, 1.1)
    heart = ellipse(heart_u, 0.33, heart_w, 0.24)
    below_heart = (v > 0.33) & (np.abs(u - heart_u) < heart_w * scale)
    lungs = np.zeros(XRAY_SHAPE, bool)
    for sign, width in ((-1, 0.31), (1, 0.29)):
        lung = ellipse(sign * 0.4 + rng.uniform(-0.02, 0.02), -0.03, width * rng.uniform(0.9, 1.1), 0.6)
        lungs |= lung & (sign * u > 0.09) & ~heart & ~below_heart
    texture = ndimage.gaussian_filter(rng.normal(0, 1, XRAY_SHAPE), 2.0)
    img = np.where(thorax, 150.0, 12.0)
    img[lungs] = 60.0 + 90.0 * texture[lungs]
    img[heart & thorax] = 175.0
    img[thorax & (np.abs(u) < 0.06)] += 45.0  # spine behind the mediastinum
    for side in (-1, 1):  # posterior ribs: arcs bending down laterally
        for k in range(10):
            arc = -0.62 + 0.125 * k + 0.35 * (u - side * 0.1) ** 2
            img[thorax & (side * u > 0.08) & (np.abs(v - arc) < 0.022)] += 35.0
        clavicle = -0.68 + 0.12 * side * u
        img[thorax & (side * u > 0.05) & (side * u < 0.6) & (np.abs(v - clavicle) < 0.03)] += 45.0
    img[thorax & (v > 0.55)] += 25.0  # abdomen below the diaphragm
    img = ndimage.gaussian_filter(img, 1.5) * rng.uniform(0.9, 1.1) + rng.normal(0, 4, XRAY_SHAPE)
    return np.rint(img).clip(0, 255).astype(np.uint8), lungs.astype(np.uint8)


def _write_xray_lungs(folder: Path, rng: np.random.Generator) -> None:
    cases = _dataset_json(
        folder,
        *XRAY_CASES,
        ".png",
        name="xray_lungs",
        description="Synthetic PA chest radiographs (8-bit, bright = dense) with lung-field masks",
        reference="medseg sample data (synthetic, exact ground truth)",
        licence="Apache-2.0",
        tensorImageSize="2D",
        modality={"0": "DX"},
        labels={"0": "background", "1": "lungs"},
        spacing_mm=list(XRAY_SPACING_MM),
    )
    for image_path, label_path in cases:
        image, mask = xray_phantom(rng)
        _write_png(image_path, image)
        _write_png(label_path, mask)


# ---- fluorescence nuclei ------------------------------------------------------------------------------------------
def nuclei_phantom(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescence-like image (uint16) of touching nuclei and its instance label map (uint16), both ``[x, y]``.

    Nuclei are ellipses; where two overlap, each pixel goes to the nucleus whose
    ellipse it lies deeper inside, giving touching instances with a shared border.
    """
    nx, ny = NUCLEI_SHAPE
    x, y = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float), indexing="ij")
    centers = []
    for cx in np.arange(16, nx - 8, 34.0):
        for cy in np.arange(16, ny - 8, 34.0):
            if rng.random() < 0.9:
                c = np.array([cx, cy]) + rng.uniform(-8, 8, 2)
                centers.append(c)
                if rng.random() < 0.6:  # a touching neighbour
                    centers.append(c + 18.0 * np.array([np.cos(t := rng.uniform(0, 2 * np.pi)), np.sin(t)]))
    depth = np.full(NUCLEI_SHAPE, np.inf)
    labels = np.zeros(NUCLEI_SHAPE, np.uint16)
    brightness = np.zeros(NUCLEI_SHAPE)
    for index, (cx, cy) in enumerate(centers, start=1):
        ra, rb, a = rng.uniform(8, 13), rng.uniform(6, 10), rng.uniform(0, np.pi)
        du, dv = x - cx, y - cy
        d = ((np.cos(a) * du + np.sin(a) * dv) / ra) ** 2 + ((-np.sin(a) * du + np.cos(a) * dv) / rb) ** 2
        mine = (d <= 1.0) & (d < depth)
        depth[mine], labels[mine] = d[mine], index
        brightness[mine] = rng.uniform(1500, 5000) * (1.0 - 0.35 * d[mine])
    labels = _relabel_sequential(labels)
    texture = 1.0 + 0.15 * ndimage.gaussian_filter(rng.normal(0, 1, NUCLEI_SHAPE), 1.5)
    signal = ndimage.gaussian_filter(brightness * texture, 1.2) + 200.0 + 60.0 * x / nx
    counts = rng.poisson(signal).astype(float) + rng.normal(0, 20, NUCLEI_SHAPE)
    return np.rint(counts).clip(0, 65535).astype(np.uint16), labels


def _relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber instances 1..N in order of first appearance, dropping ids hidden entirely by neighbours."""
    ids = np.unique(labels[labels > 0])
    lut = np.zeros(int(labels.max()) + 1, labels.dtype)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[labels]


def _write_nuclei(folder: Path, rng: np.random.Generator) -> None:
    cases = _dataset_json(
        folder,
        *NUCLEI_CASES,
        ".tif",
        name="nuclei",
        description="Synthetic fluorescence nuclei (uint16) with instance label maps (one integer per nucleus)",
        reference="medseg sample data (synthetic, exact ground truth)",
        licence="Apache-2.0",
        tensorImageSize="2D",
        modality={"0": "fluorescence"},
        labels={"0": "background", "1": "nucleus"},
        label_kind="instance",
        pixel_size_um=NUCLEI_PIXEL_UM,
    )
    for image_path, label_path in cases:
        image, labels = nuclei_phantom(rng)
        _write_tiff(image_path, image, NUCLEI_PIXEL_UM)
        _write_tiff(label_path, labels, NUCLEI_PIXEL_UM)


README = """\
# medseg sample data

Synthetic data with exact ground truth, written by `medseg.sample_data.generate`
(`medseg sample-data OUT --seed {seed}` regenerates this folder voxel for voxel;
`tests/test_sample_data.py` checks that it does). Nothing here comes from a patient.
Every data set uses the Medical Segmentation Decathlon layout: `dataset.json`
(`labels`, `training` and `test` lists of `{{"image", "label"}}` paths relative to
the data set folder) with `imagesTr/`, `labelsTr/`, `imagesTs/`, `labelsTs/`.

| folder | what | cases | format |
| --- | --- | --- | --- |
| `ct_organs/` | abdominal CT-like phantoms, 96x80x40 voxels of 3x3x4 mm, LPS | 6 train, 2 test | int16 HU NIfTI; uint8 label NIfTI |
| `ct_organs_dicom/` | the first test phantom (`imagesTs/case_006.nii.gz`) as a CT DICOM series | 40 slices | DICOM, int16 + rescale |
| `xray_lungs/` | PA chest radiograph-like images, 256x256, 1.4 mm pixels | 6 train, 2 test | 8-bit PNG; PNG masks 0/1 |
| `nuclei/` | fluorescence-like nuclei, many touching, 256x256, 0.5 um pixels | 4 train, 2 test | uint16 TIFF; uint16 instance TIFF |

## ct_organs
Labels: 0 background, 1 liver, 2 spleen, 3 kidney_left, 4 kidney_right, 5 spine
(vertebral bone), 6 lungs. Each case varies body size, fat thickness, organ
position/size/rotation, field-of-view position, HU levels and noise (8-16 HU).
Intensities: air -1000, lung about -850, fat about -100, muscle 40, liver about 85,
spleen about 50, kidney cortex about 150 (medulla 100), cancellous bone about 260,
cortical bone about 800 HU. Unlabelled look-alikes make the task non-trivial:
heart, aorta (200 HU), vena cava, ribs (550 HU), intervertebral discs, bowel gas.
Voxels carry partial-volume blur. The NIfTI files record modality CT and unit HU.

## xray_lungs
Lung fields (label 1) exclude the heart shadow; ribs, clavicles, spine and the
diaphragm overlap as on a real film. PNG has no trustworthy pixel size, so the
pixel spacing is given in `dataset.json` as `spacing_mm` ([column, row]); load with
`medseg.load(path, spacing=(1.4, 1.4))`. Without it medseg reports the spacing as unknown.

## nuclei
Label maps are instance maps: 0 background, each nucleus its own integer 1..N
(`label_kind: "instance"` in `dataset.json`; the semantic class is `label > 0`).
The pixel size (0.5 um) is stored in the TIFF XResolution/YResolution tags
(pixels per centimetre) and repeated as `pixel_size_um` in `dataset.json`.
"""
