"""Polygon annotations: exact mask <-> polygon conversion, the four file formats, pixel conventions, bad input."""

from __future__ import annotations

import base64
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image as PILImage
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from shapely.geometry import Polygon

import medseg
from medseg.annotations import (
    detect_format,
    labels_to_polygons,
    load_annotation_labels,
    mask_to_polygons,
    polygons_to_mask,
    read_annotations,
    write_annotations,
)
from medseg.errors import AnnotationError, GeometryError, LabelError, MedsegError

# pycocotools' decoder predates numpy 2's copy keyword
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

FORMATS = {"coco": "a.json", "geojson": "a.geojson", "labelme": "a.json", "cvat": "a.xml"}


def _masks() -> dict[str, np.ndarray]:
    """Hand-made [x, y] masks with holes, islands, diagonal contacts and a one-pixel object."""
    square = np.zeros((12, 12), bool)
    square[2:9, 3:10] = True
    ring = square.copy()
    ring[4:7, 5:8] = False
    nested = np.zeros((15, 15), bool)
    nested[1:14, 1:14] = True
    nested[3:12, 3:12] = False
    nested[5:10, 5:10] = True  # an island in the hole
    nested[7, 7] = False  # with its own hole
    islands = np.zeros((10, 8), bool)
    islands[0:2, 0:3] = True
    islands[5:10, 4:8] = True
    diagonal = np.zeros((6, 6), bool)
    diagonal[[1, 2, 3, 2], [1, 2, 3, 4]] = True  # corner contacts only
    pocket = np.zeros((5, 5), bool)  # a ring closed by a corner contact: its pocket is a hole touching the outline
    pocket[1:4, 1] = pocket[1, 1:4] = pocket[3, 1:3] = pocket[2, 3] = True
    holes_touching = np.ones((7, 7), bool)
    holes_touching[[2, 3], [2, 3]] = False  # two holes meeting at a corner
    single = np.zeros((3, 3), bool)
    single[1, 1] = True
    return {k: v for k, v in locals().items() if isinstance(v, np.ndarray)}


# (polygons, holes) of each mask: foreground 4-connected, background 8-connected
_PARTS = {"square": (1, 0), "ring": (1, 1), "nested": (2, 2), "islands": (2, 0), "diagonal": (4, 0), "pocket": (1, 1),
          "holes_touching": (1, 2), "single": (1, 0)}  # fmt: skip


@pytest.mark.parametrize("name", list(_masks()))
def test_mask_to_polygons_is_exact_and_valid(name):
    mask = _masks()[name]
    polys = mask_to_polygons(mask)
    assert polys.is_valid, shapely.is_valid_reason(polys)
    assert np.array_equal(polygons_to_mask(polys, mask.shape), mask)
    assert polys.area == mask.sum()  # every vertex is a pixel corner
    for p in polys.geoms:
        assert shapely.is_ccw(p.exterior) and not any(shapely.is_ccw(h) for h in p.interiors)
    assert (len(polys.geoms), sum(len(p.interiors) for p in polys.geoms)) == _PARTS[name]


def test_random_masks_round_trip_exactly():
    rng = np.random.default_rng(0)
    for _ in range(150):
        mask = rng.random(tuple(rng.integers(1, 16, 2))) < rng.random()
        polys = mask_to_polygons(mask)
        assert polys.is_empty == (not mask.any()) and (polys.is_empty or polys.is_valid)
        assert np.array_equal(polygons_to_mask(polys, mask.shape), mask)


def test_label_maps_trace_to_one_polygon_per_4_connected_piece_with_its_holes():
    """Watershed-like instance maps (touching objects, corner contacts) and random multi-value maps, traced in one
    pass: per value, every polygon valid, the pixels exact, and the topology scipy finds."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    rng = np.random.default_rng(3)
    for k in range(120):
        shape = tuple(int(n) for n in rng.integers(2, 48, 2))
        if k % 2:
            foreground = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.5
            distance = ndimage.distance_transform_edt(foreground)
            seeds = ndimage.label((distance > 1.5) & (rng.random(shape) < 0.1))[0]
            labels = watershed(-distance, seeds, mask=foreground).astype(np.uint32)
        else:
            labels = (rng.random(shape) < rng.uniform(0.2, 0.9)) * rng.integers(1, 6, shape).astype(np.uint16)
        traced = labels_to_polygons(labels)
        assert sorted(traced) == sorted(set(np.unique(labels).tolist()) - {0})
        for value, polys in traced.items():
            mask = labels == value
            assert polys.is_valid, shapely.is_valid_reason(polys)
            assert np.array_equal(polygons_to_mask(polys, mask.shape), mask)
            pieces, n_pieces = ndimage.label(mask)  # 4-connected
            # a piece's holes: the 4-connected regions outside it but the one around the map (two diagonal pixels of
            # one piece close the corner between them; diagonal pixels of two pieces leave it open)
            holes = sum(ndimage.label(np.pad(pieces != i, 1, constant_values=True))[1] - 1 for i in range(1, n_pieces + 1))
            assert (len(polys.geoms), sum(len(p.interiors) for p in polys.geoms)) == (n_pieces, holes)


def test_square_rasterises_to_9x9_like_pycocotools(tmp_path):
    flat = [0, 0, 0, 9, 9, 9, 9, 0]
    ours = polygons_to_mask(Polygon(np.reshape(flat, (-1, 2))), (20, 20))
    theirs = coco_mask.decode(coco_mask.frPyObjects([flat], 20, 20))[..., 0].T  # pycocotools: [row, column]
    expected = np.zeros((20, 20), bool)
    expected[:9, :9] = True
    assert np.array_equal(ours, expected) and np.array_equal(theirs.astype(bool), expected)
    coco = {
        "images": [{"id": 7, "file_name": "x.png", "width": 20, "height": 20}],
        "categories": [{"id": 3, "name": "cell"}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "segmentation": [flat], "iscrowd": 0}],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    read = read_annotations(tmp_path / "c.json")
    assert np.array_equal(read.array == 1, expected) and read.label_names == {1: "cell"}
    assert read.meta["annotations"]["categories"] == {3: "cell"} and not read.spacing_known


def test_pixel_centres_are_at_half_integers_unlike_scikit_image():
    from skimage.draw import polygon2mask

    rng = np.random.default_rng(1)
    shifted_same, unshifted_diff = True, 0
    for _ in range(50):
        angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
        radii = rng.uniform(2, 10, 7)
        verts = np.c_[15 + radii * np.cos(angles), 12 + radii * np.sin(angles)]
        ours = polygons_to_mask(Polygon(verts), (30, 25))
        shifted_same &= np.array_equal(ours, polygon2mask((30, 25), verts - 0.5))
        unshifted_diff += int((ours != polygon2mask((30, 25), verts)).sum())
    assert shifted_same and unshifted_diff > 100


def test_boundary_centres_follow_the_half_open_rule():
    # a rectangle whose edges pass through pixel centres covers [x0, x1) x [y0, y1) of them
    mask = polygons_to_mask(Polygon([(1.5, 2.5), (4.5, 2.5), (4.5, 5.5), (1.5, 5.5)]), (8, 8))
    assert set(map(tuple, np.argwhere(mask))) == {(x, y) for x in (1, 2, 3) for y in (2, 3, 4)}


def _asymmetric() -> np.ndarray:
    labels = np.zeros((10, 14), np.uint8)  # 10 columns (x), 14 rows (y)
    labels[2:6, 7:9] = 1  # an L: a bar along x ...
    labels[2:4, 9:12] = 1  # ... and a leg along y
    labels[8, 0] = 2  # one pixel near the right edge, in the first row
    return labels


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_asymmetric_mask_lands_in_place(tmp_path, fmt):
    labels = _asymmetric()
    path = write_annotations(labels, tmp_path / FORMATS[fmt], format=fmt, class_names={1: "ell", 2: "dot"})
    back = read_annotations(path, medseg.Image(labels))  # GeoJSON states no image size
    assert back.shape == (10, 14) and np.array_equal(back.array, labels)
    assert back.label_names == {1: "ell", 2: "dot"}
    if fmt == "coco":
        data = json.loads(path.read_text())
        dot = next(a for a in data["annotations"] if a["category_id"] == 2)
        assert dot["bbox"] == [8, 0, 1, 1] and sorted(map(tuple, np.reshape(dot["segmentation"][0], (-1, 2)))) == [
            (8, 0), (8, 1), (9, 0), (9, 1)
        ]  # fmt: skip
        assert data["images"][0]["width"] == 10 and data["images"][0]["height"] == 14
        decoded = COCO(str(path)).annToMask({**data["annotations"][0], "image_id": 1})
        assert np.array_equal(decoded.T, labels == data["annotations"][0]["category_id"])
    if fmt == "geojson":
        feature = json.loads(path.read_text())["features"][1]
        assert feature["geometry"]["coordinates"][0][0] in ([8, 0], [9, 0], [9, 1], [8, 1])


def test_touching_instances_round_trip_in_every_format(tmp_path):
    labels = np.zeros((12, 9), np.uint16)
    labels[1:5, 1:5] = 3
    labels[5:9, 1:5] = 4  # shares an edge with 3
    labels[9:11, 5:8] = 9  # touches 4 at a corner only
    labels[10:12, 0:2] = 3  # a second part of 3 (one object in two polygons)
    for fmt, name in FORMATS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overlap, no repairs
            path = write_annotations(labels, tmp_path / name, format=fmt, class_names="cell")
            back = read_annotations(path, medseg.Image(labels))
        for value in (3, 4, 9):
            got = np.unique(back.array[labels == value])
            assert len(got) == 1 and np.array_equal(back.array == got[0], labels == value), (fmt, value)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_holes_and_islands_survive_every_format(tmp_path, fmt):
    masks = _masks()
    labels = np.zeros((15, 15), np.uint16)
    labels[masks["nested"]] = 1
    labels[:12, :12][masks["ring"] & ~masks["nested"][:12, :12]] = 2
    path = write_annotations(labels, tmp_path / FORMATS[fmt], format=fmt, class_names="x")
    assert np.array_equal(read_annotations(path, medseg.Image(labels)).array, labels)


@pytest.fixture(scope="module")
def nuclei_labels(shared_data) -> list[medseg.Image]:
    files = [
        shared_data / "cells_fluo" / "nuclei_labels.tif",
        *sorted((shared_data / "he_nuclei").glob("*_labels.png")),
    ]
    return [medseg.load(f) for f in files]


def _instance_ious(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """IoU of each reference instance with the read-back instance that covers most of it."""
    ious = []
    for value in np.unique(ref[ref > 0]):
        inside = ref == value
        best = np.bincount(got[inside]).argmax()
        hit = got == best if best else np.zeros_like(inside)
        ious.append((hit & inside).sum() / (hit | inside).sum())
    return np.array(ious)


def test_real_nuclei_round_trip_through_coco(nuclei_labels, tmp_path):
    medians = []
    for labels in nuclei_labels:
        exact = write_annotations(labels, tmp_path / "exact.json", format="coco", class_names="nucleus")
        back = read_annotations(exact, like=labels)
        assert back.same_grid(labels) and back.label_names[1] == "nucleus"
        assert np.all(_instance_ious(labels.array, back.array) == 1.0), labels.source
        # pycocotools decodes the same masks, polygons and RLE (objects with holes) alike
        coco = COCO(str(exact))
        for ann, value in zip(coco.dataset["annotations"], np.unique(labels.array[labels.array > 0]), strict=True):
            assert np.array_equal(coco.annToMask(ann).T.astype(bool), labels.array == value)
        simple = write_annotations(labels, tmp_path / "s.json", format="coco", class_names="n", simplify_px=0.5)
        medians.append(np.median(_instance_ious(labels.array, read_annotations(simple, like=labels).array)))
    assert min(medians) >= 0.98, medians


def test_real_nuclei_polygons_are_exact_with_holes(nuclei_labels):
    for labels in nuclei_labels:
        for value, polys in labels_to_polygons(labels.array).items():
            assert polys.is_valid
            x0, y0 = (int(v) for v in polys.bounds[:2])
            crop = labels.array[x0 : int(polys.bounds[2]), y0 : int(polys.bounds[3])] == value
            assert np.array_equal(polygons_to_mask(polys, crop.shape, (x0, y0)), crop), (labels.source, value)


def test_real_nuclei_with_holes_round_trip_in_every_format(nuclei_labels, shared_data, tmp_path):
    labels = next(im for im in nuclei_labels if im.source.endswith("cpm15_08_labels.png"))  # 29 nuclei with holes
    assert sum(any(p.interiors for p in mp.geoms) for mp in labels_to_polygons(labels.array).values()) > 10
    tile = medseg.load(shared_data / "he_nuclei" / "cpm15_08.png")  # the RGB image is the grid, as in a dataset.json
    for fmt, name in FORMATS.items():
        path = write_annotations(labels, tmp_path / name, format=fmt, class_names="nucleus")
        back = load_annotation_labels(path, tile)
        assert back.shape == tile.shape and not back.channel_axis
        assert np.all(_instance_ious(labels.array, back.array) == 1.0), fmt


def test_geojson_is_qupath_shaped(tmp_path):
    labels = _asymmetric()
    names = {1: "Tumor", 2: "Stroma"}
    path = write_annotations(
        labels, tmp_path / "q.geojson", class_names=names, image_name="t.png", object_type="detection"
    )
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 2
    for feature in data["features"]:
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(feature["id"]) == 36
        assert feature["properties"]["objectType"] == "detection"
        assert set(feature["properties"]["classification"]) == {"name", "color"}
    again = write_annotations(labels, tmp_path / "r.geojson", class_names=names, image_name="t.png")
    assert [f["id"] for f in json.loads(again.read_text())["features"]] == [f["id"] for f in data["features"]]


def test_reads_third_party_qupath_geojson(tmp_path):
    square = [[0, 0], [8, 0], [8, 8], [0, 8], [0, 0]]
    hole = [[2, 2], [2, 4], [4, 4], [4, 2], [2, 2]]
    features = [
        {"type": "Feature", "id": "a1", "geometry": {"type": "Polygon", "coordinates": [square, hole]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "colorRGB": -3670016},
                        "measurements": [{"name": "Area", "value": 60.0}]}},
        {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [[[[10, 0], [12, 0], [12, 2], [10, 2]]],
                                                                                   [[[10, 5], [11, 5], [11, 6], [10, 6]]]]},
         "properties": {"objectType": "detection", "classification": {"names": ["Tumor", "Positive"]}}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 1]}, "properties": {}},
    ]  # fmt: skip
    path = tmp_path / "qupath.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    assert detect_format(path) == "geojson"
    with pytest.warns(UserWarning, match="1 features without a polygon"):
        read = read_annotations(path)
    assert read.shape == (12, 8) and read.label_names == {1: "Tumor", 2: "Tumor: Positive"}
    assert (read.array == 1).sum() == 64 - 4 and (read.array == 2).sum() == 5
    obj = read.meta["annotations"]["objects"][1]
    assert obj["color"] == (200, 0, 0) and obj["measurements"] == {"Area": 60.0} and obj["id"] == "a1"


def test_reads_labelme_shapes_groups_and_masks(tmp_path):
    mask = np.zeros((3, 4), bool)  # rows x columns, as LabelMe stores the PNG
    mask[1, 1:3] = True
    buf = io.BytesIO()
    PILImage.fromarray(mask).save(buf, format="PNG")
    shapes = [
        {"label": "a", "points": [[1, 1], [4, 1], [4, 3], [1, 3]], "shape_type": "polygon", "group_id": 5},
        {"label": "a", "points": [[6, 1], [7, 2]], "shape_type": "rectangle", "group_id": 5},
        {"label": "b", "points": [[10, 10], [13, 10]], "shape_type": "circle", "group_id": None},
        {
            "label": "c",
            "points": [[2, 8], [5, 10]],
            "shape_type": "mask",
            "mask": base64.b64encode(buf.getvalue()).decode(),
        },
        {"label": "d", "points": [[0, 0], [3, 3]], "shape_type": "line"},
    ]
    path = tmp_path / "lm.json"
    path.write_text(json.dumps({"shapes": shapes, "imageWidth": 16, "imageHeight": 14, "imagePath": "x.png"}))
    with pytest.warns(UserWarning, match="1 shapes without an area"):
        read = read_annotations(path)
    assert read.label_names == {1: "a", 2: "b", 3: "c"} and read.shape == (16, 14)
    assert (read.array == 1).sum() == 3 * 2 + 1 * 1  # polygon and rectangle are one object (same label and group)
    assert abs((read.array == 2).sum() - np.pi * 9) < 4  # circle of radius 3
    assert set(map(tuple, np.argwhere(read.array == 3))) == {(3, 9), (4, 9)}  # the PNG's row 1, columns 1-2


def test_reads_cvat_boxes_ellipses_masks_and_z_order(tmp_path):
    xml = """<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version>
  <meta><task><labels><label><name>cell</name></label><label><name>bg</name></label></labels></task></meta>
  <image id="0" name="a.png" width="20" height="10">
    <box label="bg" xtl="0" ytl="0" xbr="10" ybr="10" z_order="0"/>
    <polygon label="cell" points="2,2;6,2;6,6;2,6" z_order="1"/>
    <mask label="cell" rle="1, 2, 1, 1, 1" left="12" top="3" width="3" height="2" z_order="0"/>
    <ellipse label="cell" cx="16" cy="7" rx="2" ry="1" rotation="90" z_order="0"/>
    <polyline label="cell" points="0,0;5,5"/>
    <tag label="cell"/>
  </image>
  <image id="1" name="b.png" width="20" height="10"/>
</annotations>"""
    path = tmp_path / "cvat.xml"
    path.write_text(xml)
    with pytest.raises(AnnotationError, match="2 images"):
        read_annotations(path)
    with pytest.warns(UserWarning) as caught:
        read = read_annotations(path, image="a.png")
    messages = " | ".join(str(w.message) for w in caught)
    assert "1 shapes without an area" in messages and "16 pixels lie in more than one object" in messages
    assert read.meta["annotations"]["categories"] == {1: "cell", 2: "bg"}
    assert (read.array[:10] == 1).sum() == 100 - 16 and (read.array[2:6, 2:6] == 2).all()  # the polygon is on top
    assert set(map(tuple, np.argwhere(read.array == 3))) == {(13, 3), (14, 3), (13, 4)}
    ellipse = np.argwhere(read.array == 4)
    assert np.ptp(ellipse[:, 0]) < np.ptp(ellipse[:, 1])  # turned by 90 degrees: taller than wide
    assert read_annotations(path, image=1).array.max() == 0


def test_coco_rle_iscrowd_and_multiple_images(tmp_path):
    mask = np.zeros((6, 5), np.uint8)  # rows x columns
    mask[1:4, 2] = 1
    compressed = coco_mask.encode(np.asfortranarray(mask))
    uncompressed = {"size": [6, 5], "counts": [7, 3, 20]}
    coco = {
        "images": [{"id": 1, "file_name": "dir/a.png", "width": 5, "height": 6},
                   {"id": 2, "file_name": "b.png", "width": 5, "height": 6}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 1,
             "segmentation": {"size": [6, 5], "counts": compressed["counts"].decode()}},
            {"id": 11, "image_id": 2, "category_id": 1, "iscrowd": 0, "segmentation": uncompressed},
        ],
    }  # fmt: skip
    path = tmp_path / "rle.json"
    path.write_text(json.dumps(coco))
    like = medseg.Image(np.zeros((5, 6), np.uint8), spacing=(0.5, 0.5), source=str(tmp_path / "a.png"))
    a = read_annotations(path, like)  # chosen by like's file name
    assert np.array_equal(a.array == 1, mask.T.astype(bool)) and a.spacing == (0.5, 0.5)
    assert a.meta["annotations"]["objects"][1]["iscrowd"] == 1
    b = read_annotations(path, image=2)
    assert np.array_equal(np.argwhere(b.array.T.ravel(order="F")).ravel(), np.arange(7, 10))  # column-major runs
    out = write_annotations(a, tmp_path / "again.json", format="coco")
    ann = json.loads(out.read_text())["annotations"][0]
    assert ann["iscrowd"] == 1 and isinstance(ann["segmentation"], dict)  # crowd regions stay RLE
    assert json.loads(out.read_text())["images"][0]["file_name"] == "dir/a.png"


def test_class_maps_round_trip_with_category_ids(tmp_path):
    labels = np.zeros((20, 16), np.uint8)
    labels[2:8, 2:8] = 1
    labels[10:18, 3:9] = 3
    labels[12:14, 5:7] = 0
    labels[2:4, 10:15] = 3  # class 3 in two parts
    like = medseg.Image(labels, spacing=(0.7, 0.7))
    names = {1: "right lung", 3: "heart"}
    path = write_annotations(like, tmp_path / "s.json", format="coco", class_names=names)
    assert {c["id"]: c["name"] for c in json.loads(path.read_text())["categories"]} == names
    back = load_annotation_labels(path, like, classes={v: k for k, v in names.items()})
    assert np.array_equal(back.array, labels) and back.spacing == (0.7, 0.7) and back.label_names == names
    inst = read_annotations(path)
    assert inst.array.max() == 2 and inst.label_names == {1: "right lung", 2: "heart"}
    again = write_annotations(inst, tmp_path / "t.json", format="coco")  # the categories read are kept
    assert {c["id"]: c["name"] for c in json.loads(again.read_text())["categories"]} == names


def test_self_intersecting_polygons_are_refused_or_repaired(tmp_path):
    bowtie = [[0, 0], [10, 10], [10, 0], [0, 10]]
    path = tmp_path / "bow.json"
    path.write_text(json.dumps({"shapes": [{"label": "x", "points": bowtie, "shape_type": "polygon"}]}))
    with pytest.raises(AnnotationError, match=r"bow\.json: shape 1 \('x'\): invalid polygon \(Self-intersection"):
        read_annotations(path)
    with pytest.warns(UserWarning, match="repaired with shapely.make_valid"):
        fixed = read_annotations(path, repair=True)
    assert (fixed.array == 1).sum() == 50 and "repaired" in fixed.warnings[0]  # two triangles of 25 pixel centres


def test_bad_input_gives_one_line_medseg_errors(tmp_path):
    good = {
        "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 6}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [{"id": 4, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 4, 0, 4, 4]]}],
    }

    def written(name: str, data) -> Path:
        (tmp_path / name).write_text(data if isinstance(data, str) else json.dumps(data))
        return tmp_path / name

    like = medseg.Image(np.zeros((6, 8), np.uint8))  # 6 columns x 8 rows: transposed
    cases = [
        (GeometryError, "for a 8x6 image .*the image is 6x8", lambda: read_annotations(written("g.json", good), like)),
        (AnnotationError, "annotation 4: unknown category_id 9", lambda: read_annotations(
            written("c.json", {**good, "annotations": [{**good["annotations"][0], "category_id": 9}]}))),
        (AnnotationError, "annotation 4, polygon 1: a polygon needs at least 3 distinct vertices", lambda: read_annotations(
            written("p.json", {**good, "annotations": [{**good["annotations"][0], "segmentation": [[0, 0, 1, 1]]}]}))),
        (AnnotationError, "RLE size", lambda: read_annotations(written("r.json", {**good, "annotations": [
            {**good["annotations"][0], "segmentation": {"size": [8, 6], "counts": [48]}}]}))),
        (AnnotationError, "annotation 4 has class 'x', not among", lambda: read_annotations(
            written("k.json", good), classes={"y": 1})),
        (AnnotationError, "not valid JSON", lambda: read_annotations(written("j.json", "{"))),
        (AnnotationError, "not a COCO, GeoJSON or LabelMe file", lambda: read_annotations(written("u.json", {"a": 1}))),
        (AnnotationError, "not well-formed XML", lambda: read_annotations(written("x.xml", "<annotations>"))),
        (AnnotationError, "no such file", lambda: read_annotations(tmp_path / "missing.json")),
        (AnnotationError, "say which format", lambda: write_annotations(np.ones((2, 2), int), tmp_path / "o.json")),
        (AnnotationError, "take no option", lambda: write_annotations(np.ones((2, 2), int), tmp_path / "o.xml", bad=1)),
        (LabelError, "2D label maps", lambda: write_annotations(np.ones((2, 2, 2), int), tmp_path / "o.xml")),
        (LabelError, "no name in class_names", lambda: write_annotations(
            np.arange(4).reshape(2, 2), tmp_path / "o.xml", class_names={1: "a"})),
    ]  # fmt: skip
    for kind, message, call in cases:
        with pytest.raises(kind, match=message) as info:
            call()
        assert isinstance(info.value, MedsegError) and "\n" not in str(info.value)
