"""The data layer: COCO files and crop folders read and validated, images loaded as the
detector loads them, windows cut as the pyramid shows objects, splits by image, and the
synthetic shapes data set."""
import json
import math
import os

import cv2
import numpy as np
import pytest

from detector.datasets.annotations import AnnotatedImage, load_annotated, load_image, split_by_image
from detector.datasets.coco import read_coco, results_json, write_coco
from detector.datasets.folders import list_images, read_crop_folder
from detector.datasets.shapes import COLOURS, draw_shape, write_shapes
from detector.datasets.windows import (OFF_CENTRE, WRONG_SIZE, negative_windows, positive_windows,
                                       random_windows)

WINDOW = (32, 32)
OBJECT_SIZE = 0.65
JITTER = 2 ** (1 / 6)
SHIFT = 2.0


def _png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _noise(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------- COCO

def _base_doc():
    """Three 64x48 images; cat and dog each in two images; a crowd; image 3 is a negative."""
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                   {"id": 2, "file_name": "sub/b.png", "width": 64, "height": 48},
                   {"id": 3, "file_name": "c.png", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [4, 5, 20, 10], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 5, "bbox": [30, 8, 12.5, 30], "iscrowd": 0},
            {"id": 11, "image_id": 2, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 0},
            {"id": 14, "image_id": 2, "category_id": 5, "bbox": [10, 20, 5, 6]},
            {"id": 13, "image_id": 2, "category_id": 1, "bbox": [1, 2, 30, 20], "iscrowd": 1},
        ],
    }


@pytest.fixture
def coco_dir(tmp_path):
    for i, name in enumerate(("a.png", "sub/b.png", "c.png")):
        _png(tmp_path / name, _noise(i, (48, 64, 3)))
    return tmp_path


def _write_doc(folder, doc):
    path = folder / "annotations.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


def test_read_coco_reads_boxes_labels_ids_and_keeps_negatives(coco_dir):
    data = read_coco(_write_doc(coco_dir, _base_doc()))
    assert data.categories == [(1, "cat"), (5, "dog")]
    assert data.classes == ["cat", "dog"] and data.category_id == {"cat": 1, "dog": 5}
    by_id = {item.image_id: item for item in data.images}
    assert sorted(by_id) == [1, 2, 3]
    np.testing.assert_array_equal(by_id[1].boxes, [[4, 5, 24, 15], [30, 8, 42.5, 38]])
    assert by_id[1].labels == ("cat", "dog")
    assert by_id[2].labels == ("cat", "dog") and len(by_id[3].boxes) == 0
    np.testing.assert_array_equal(by_id[2].ignore_boxes, [[1, 2, 31, 22]])  # the crowd, not a positive
    assert by_id[2].ignore_labels == ("cat",)
    assert by_id[2].path == str(coco_dir / "sub" / "b.png") and (by_id[2].width, by_id[2].height) == (64, 48)
    assert data.skipped == ()


def test_write_coco_round_trip(coco_dir, tmp_path):
    rng = np.random.default_rng(3)
    items = []
    for i, name in enumerate(("a.png", "sub/b.png", "c.png")):
        n = i + 1
        xy = rng.uniform(0, 30, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 18, (n, 2))], axis=1)  # inside 64x48
        crowd = i == 2
        items.append(AnnotatedImage(str(coco_dir / name), 7 * i + 2, 64, 48, boxes,
                                    [("cat", "dog")[j % 2] for j in range(n)],
                                    ignore_boxes=[[1, 1, 5, 5]] if crowd else [], ignore_labels=["dog"] if crowd else []))
    path = write_coco(coco_dir / "out.json", items, ["cat", "dog"], {"cat": 3, "dog": 9})
    assert [f for f in os.listdir(coco_dir) if f.endswith(".tmp")] == []
    data = read_coco(path)
    assert data.category_id == {"cat": 3, "dog": 9}
    assert len(data.images) == len(items)
    for a, b in zip(items, data.images):
        assert (a.path, a.image_id, a.width, a.height, a.labels) == (b.path, b.image_id, b.width, b.height, b.labels)
        np.testing.assert_allclose(b.boxes, a.boxes, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(b.ignore_boxes, a.ignore_boxes)
    doc = json.loads(open(path).read())
    assert doc["images"][1]["file_name"] == "sub/b.png"  # relative to the JSON, with "/"


def test_pycocotools_reads_what_write_coco_writes_and_scores_results_json(coco_dir):
    pycocotools = pytest.importorskip("pycocotools.coco")
    from pycocotools.cocoeval import COCOeval

    data = read_coco(_write_doc(coco_dir, _base_doc()))
    path = write_coco(coco_dir / "again.json", data.images, data.classes, data.category_id)
    coco = pycocotools.COCO(path)
    assert sorted(coco.getImgIds()) == [1, 2, 3]
    assert {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())} == data.category_id
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1], iscrowd=False))
    assert sorted(tuple(a["bbox"]) for a in anns) == [(4, 5, 20, 10), (30, 8, 12.5, 30)]
    assert len(coco.getAnnIds(iscrowd=True)) == 1
    # the ground truth given back as detections scores a perfect AP in pycocotools' own evaluation
    detections = [(item.image_id, [(box, label, 0.9) for box, label in zip(item.boxes, item.labels)])
                  for item in data.images]
    results = results_json(detections, data.category_id)
    assert results[0] == {"image_id": 1, "category_id": 1, "bbox": [4.0, 5.0, 20.0, 10.0], "score": 0.9}
    evaluation = COCOeval(coco, coco.loadRes(results), "bbox")
    evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_results_json_takes_detections_and_rejects_unknown_labels():
    from detector.detect import Detection

    results = results_json([(4, [Detection((1.5, 2, 11.5, 7), "cat", 0.25)])], {"cat": 8})
    assert results == [{"image_id": 4, "category_id": 8, "bbox": [1.5, 2.0, 10.0, 5.0], "score": 0.25}]
    with pytest.raises(ValueError, match=r"image id 4: detection label 'cow'"):
        results_json([(4, [((0, 0, 1, 1), "cow", 0.5)])], {"cat": 1})


def test_box_slightly_outside_is_clipped_and_missing_size_is_read_from_the_file(coco_dir):
    doc = _base_doc()
    doc["annotations"][0]["bbox"] = [-0.5, 0, 64.8, 10]
    del doc["images"][0]["width"], doc["images"][0]["height"]
    data = read_coco(_write_doc(coco_dir, doc))
    item = data.images[0]
    assert (item.width, item.height) == (64, 48)
    np.testing.assert_array_equal(item.boxes[0], [0, 0, 64, 10])


def test_images_dir_is_where_file_names_are_found(coco_dir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("json")
    data = read_coco(_write_doc(elsewhere, _base_doc()), images_dir=coco_dir)
    assert data.images[0].path == str(coco_dir / "a.png")
    with pytest.raises(ValueError, match=r"'a\.png' not found in .*" + elsewhere.name):
        read_coco(_write_doc(elsewhere, _base_doc()))


_DELETE = object()


def _set(path, value):
    """A change to a COCO document: set (or delete) the item at ``path``."""
    def change(doc):
        *keys, last = path
        target = doc
        for key in keys:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return change

# (case, change to the document, what the message names, the count in the skip message or None if fatal)
BAD_COCO = [
    ("unknown category id", _set(("annotations", 0, "category_id"), 99),
     ["annotation id 10", "image id 1, 'a.png'", "category_id 99"], "1 bad annotations"),
    ("unknown image id", _set(("annotations", 0, "image_id"), 42), ["annotation id 10", "image_id 42"],
     "1 bad annotations"),
    ("box outside", _set(("annotations", 0, "bbox"), [50, 5, 20, 10]),
     ["annotation id 10", "'a.png'", "[50, 5, 20, 10]", "outside the 64x48"], "1 bad annotations"),
    ("zero width", _set(("annotations", 1, "bbox"), [10, 5, 0, 20]),
     ["annotation id 12", "box [10, 5, 0, 20] has zero width"], "1 bad annotations"),
    ("negative height", _set(("annotations", 1, "bbox"), [10, 5, 3, -2]), ["annotation id 12", "negative height"],
     "1 bad annotations"),
    ("NaN in bbox", _set(("annotations", 0, "bbox"), [4, float("nan"), 20, 10]),
     ["annotation id 10", "not 4 finite numbers"], "1 bad annotations"),
    ("three numbers", _set(("annotations", 0, "bbox"), [4, 5, 20]), ["annotation id 10", "not 4 finite"],
     "1 bad annotations"),
    ("string in bbox", _set(("annotations", 0, "bbox"), [4, 5, "20", 10]), ["annotation id 10", "not 4 finite"],
     "1 bad annotations"),
    ("missing file", _set(("images", 0, "file_name"), "missing.png"), ["image id 1", "'missing.png' not found in"],
     "1 bad images (with their 2 annotations)"),
    ("no file_name", _set(("images", 0, "file_name"), _DELETE), ["image id 1", "no 'file_name'"],
     "1 bad images (with their 2 annotations)"),
    ("bad width", _set(("images", 0, "width"), -64), ["image id 1", "width -64"],
     "1 bad images (with their 2 annotations)"),
    ("class with no examples", lambda doc: doc["categories"].append({"id": 7, "name": "bird"}),
     ["class 'bird' (category id 7) has no examples"], "1 classes without examples"),
    ("duplicate image id", _set(("images", 1, "id"), 1), ["image id 1 appears twice", "'a.png'", "'sub/b.png'"],
     None),
    ("duplicate category id", _set(("categories", 1, "id"), 1), ["category id 1 appears twice", "'cat'", "'dog'"],
     None),
    ("duplicate category name", _set(("categories", 1, "name"), "cat"), ["category name 'cat' appears twice"],
     None),
    ("category without name", _set(("categories", 1, "name"), _DELETE), ["category id 5 has no 'name'"], None),
    ("missing keys", _set(("categories",), _DELETE), ["missing 'categories'"], None),
    ("images not a list", _set(("images",), {}), ["'images' must be a list"], None),
]


@pytest.mark.parametrize("case, change, named, skipped", BAD_COCO, ids=[c[0] for c in BAD_COCO])
def test_bad_coco_is_an_error_naming_file_and_item_or_skipped_and_counted(coco_dir, case, change, named, skipped):
    doc = _base_doc()
    change(doc)
    path = _write_doc(coco_dir, doc)
    with pytest.raises(ValueError) as error:
        read_coco(path)
    message = str(error.value)
    assert message.startswith(path + ":")
    for text in named:
        assert text in message
    log = []
    if skipped is None:  # the whole file is ambiguous: never skipped
        with pytest.raises(ValueError, match=named[0]):
            read_coco(path, skip_bad=True, log=log.append)
        return
    data = read_coco(path, skip_bad=True, log=log.append)
    assert len(log) == 1 and f"skipped {skipped}" in log[0] and named[-1] in log[0]
    assert len(data.skipped) == 1
    kept = sum(len(item.boxes) for item in data.images)
    assert kept == 4 - {"1 bad annotations": 1, "1 classes without examples": 0}.get(skipped, 2)


def test_skip_bad_without_a_log_warns_instead_of_dropping_silently(coco_dir):
    doc = _base_doc()
    doc["annotations"][0]["bbox"] = [4, 5, 0, 10]
    with pytest.warns(UserWarning, match="skipped 1 bad annotations"):
        read_coco(_write_doc(coco_dir, doc), skip_bad=True)


@pytest.mark.parametrize("text, named", [("{not json", "not valid JSON"), ("[1, 2]", "got a JSON list"),
                                         ("\xff\xfe", "not valid JSON")])
def test_a_file_that_is_not_a_coco_object_is_an_error(coco_dir, text, named):
    path = coco_dir / "annotations.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=named) as error:
        read_coco(path, skip_bad=True)
    assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        read_coco(coco_dir / "nothing.json")


def test_an_unreadable_image_is_named_when_its_size_is_read_or_when_it_is_loaded(coco_dir):
    (coco_dir / "c.png").write_bytes(b"not a PNG at all " * 20)
    data = read_coco(_write_doc(coco_dir, _base_doc()))  # sizes given: files are not decoded here
    with pytest.raises(ValueError, match=r"cannot read an image from .*c\.png"):
        load_annotated(data.images[2], 3)
    doc = _base_doc()
    del doc["images"][2]["width"]
    with pytest.raises(ValueError, match=r"image id 3 \('c\.png'\): cannot read an image from .*c\.png"):
        read_coco(_write_doc(coco_dir, doc))
    log = []
    data = read_coco(_write_doc(coco_dir, doc), skip_bad=True, log=log.append)
    assert [item.image_id for item in data.images] == [1, 2] and "skipped 1 bad images" in log[0]


def test_load_annotated_checks_the_size_the_boxes_were_made_for(coco_dir):
    doc = _base_doc()
    doc["images"][0]["width"] = 48
    doc["images"][0]["height"] = 64
    data = read_coco(_write_doc(coco_dir, doc))
    assert load_annotated(data.images[1], 1).shape == (48, 64)
    with pytest.raises(ValueError, match=r"a\.png \(image id 1\) is 64x48 \(WxH\) but its annotations are for 48x64"):
        load_annotated(data.images[0], 1)


# ---------------------------------------------------------------- images and folders

def test_load_image_converts_depths_and_channels(tmp_path):
    bgr = _noise(1, (20, 30, 3))
    _png(tmp_path / "bgr.png", bgr)
    _png(tmp_path / "bgra.png", np.dstack([bgr, _noise(2, (20, 30))]))
    _png(tmp_path / "gray.png", bgr[:, :, 1])
    _png(tmp_path / "deep.png", bgr.astype(np.uint16) * 257)
    _png(tmp_path / "ünïcode ✓.png", bgr)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    for name in ("bgr.png", "bgra.png", "deep.png", "ünïcode ✓.png"):
        np.testing.assert_array_equal(load_image(tmp_path / name, 3), bgr)
        np.testing.assert_array_equal(load_image(tmp_path / name, 1), gray)
    np.testing.assert_array_equal(load_image(tmp_path / "gray.png", 3), np.dstack([bgr[:, :, 1]] * 3))
    np.testing.assert_array_equal(load_image(tmp_path / "gray.png", 1), bgr[:, :, 1])
    (tmp_path / "junk.jpg").write_bytes(b"\x00" * 100)
    for name in ("junk.jpg", "absent.png"):
        with pytest.raises(ValueError, match=f"cannot read an image from {tmp_path / name}"):
            load_image(tmp_path / name, 1)


def test_list_images_is_recursive_sorted_case_blind_and_skips_hidden(tmp_path):
    for name in ("b/x.PNG", "a.JpG", "c/d/e.webp", ".hidden/f.png", "b/.g.png"):
        _png(tmp_path / name, _noise(0, (4, 4)))
    (tmp_path / "notes.txt").write_text("not an image")
    assert list_images(tmp_path) == [str(tmp_path / n) for n in ("a.JpG", "b/x.PNG", "c/d/e.webp")]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    (tmp_path / ".hidden" / "f.png").unlink()
    with pytest.raises(ValueError, match=f"{tmp_path / '.hidden'} has no images"):
        list_images(tmp_path / ".hidden")


@pytest.fixture
def crops(tmp_path):
    root = tmp_path / "crops"
    for name in ("cat/1.png", "cat/2.jpg", "dog/deep/3.png", "background/4.png", ".trash/5.png", "cat/.6.png"):
        _png(root / name, _noise(len(name), (10, 8, 3)))
    (root / "dog" / "labels.txt").write_text("not an image")
    return root


def test_read_crop_folder_finds_classes_and_items(crops):
    folder = read_crop_folder(crops)
    assert folder.classes == ["cat", "dog"] and folder.background == "background"
    assert folder.items == [(str(crops / "background/4.png"), "background"), (str(crops / "cat/1.png"), "cat"),
                            (str(crops / "cat/2.jpg"), "cat"), (str(crops / "dog/deep/3.png"), "dog")]
    other = read_crop_folder(crops, background="dog")
    assert other.classes == ["background", "cat"]


def _no_subfolders(root):
    _png(root / "loose.png", _noise(0, (4, 4)))


def _class_without_images(root):
    _png(root / "a" / "1.png", _noise(0, (4, 4)))
    (root / "b" / "sub").mkdir(parents=True)
    (root / "b" / "readme.txt").write_text("x")


def _only_background(root):
    _png(root / "background" / "1.png", _noise(0, (4, 4)))


def _background_in_other_case(root):
    _png(root / "Background" / "1.png", _noise(0, (4, 4)))
    _png(root / "cat" / "1.png", _noise(0, (4, 4)))


BAD_FOLDERS = [
    ("empty root", lambda root: root.mkdir(), ValueError, "has no sub-folders"),
    ("no sub-folders", _no_subfolders, ValueError, "has no sub-folders"),
    ("class without images", _class_without_images, ValueError, "class 'b' ({root}/b) has no images"),
    ("root missing", lambda root: None, FileNotFoundError, "crop folder {root} does not exist"),
    ("root is a file", lambda root: root.write_text("x"), ValueError, "{root} is a file"),
    ("only background", _only_background, ValueError, "{root} has no object classes: only a 'background'"),
    ("Background", _background_in_other_case, ValueError, "sub-folder 'Background' but the background class"),
]


@pytest.mark.parametrize("case, make, error, named", BAD_FOLDERS, ids=[c[0] for c in BAD_FOLDERS])
def test_bad_crop_folder_is_an_error_naming_it(tmp_path, case, make, error, named):
    root = tmp_path / "crops"
    make(root)
    with pytest.raises(error) as raised:
        read_crop_folder(root)
    assert named.format(root=root) in str(raised.value)


def test_skip_bad_leaves_out_a_class_without_images_and_says_so(tmp_path):
    root = tmp_path / "crops"
    _class_without_images(root)
    _png(root / "stray.png", _noise(0, (4, 4)))
    log = []
    folder = read_crop_folder(root, skip_bad=True, log=log.append)
    assert folder.classes == ["a"] and len(log) == 1
    assert f"class 'b' ({root}/b) has no images" in log[0] and "1 images directly in" in log[0]


def test_an_unreadable_crop_is_named_when_loaded(crops):
    (crops / "cat" / "2.jpg").write_bytes(b"garbage" * 10)
    folder = read_crop_folder(crops)  # files are not decoded while listing
    with pytest.raises(ValueError, match=f"cannot read an image from {crops / 'cat' / '2.jpg'}"):
        [load_image(path, 1) for path, _ in folder.items]


# ---------------------------------------------------------------- split by image

def _random_images(seed, n, classes):
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        k = int(rng.integers(0, 4))  # 0: a negative
        labels = [classes[int(j)] for j in rng.zipf(1.6, k) % len(classes)]
        images.append(AnnotatedImage(f"/x/{i}.png", i, 10, 10, np.tile([0, 0, 1, 1], (k, 1)), labels))
    return images


@pytest.mark.parametrize("seed", range(6))
def test_split_by_image_is_disjoint_deterministic_and_validates_every_class_it_can(seed):
    images = _random_images(seed, 60, [f"c{i}" for i in range(12)])
    train, validation = split_by_image(images, 0.2, seed)
    assert not {id(i) for i in train} & {id(i) for i in validation}
    assert sorted(i.image_id for i in train + validation) == list(range(60))
    again = split_by_image(images, 0.2, seed)
    assert [i.image_id for i in again[1]] == [i.image_id for i in validation]
    assert [i.image_id for i in split_by_image(images, 0.2, seed + 100)[1]] != [i.image_id for i in validation]
    count = {}
    for item in images:
        for name in set(item.labels):
            count[name] = count.get(name, 0) + 1
    trained = {name for item in train for name in item.labels}
    validated = {name for item in validation for name in item.labels}
    assert trained == set(count)  # every class keeps a training image
    for name, n in count.items():
        if n >= 2 and name not in validated:
            # allowed only when every image of the class is the last training image of another class
            holders = [i for i in train if name in i.labels]
            assert all(any(sum(o in i.labels for i in train) == 1 for o in set(h.labels)) for h in holders), name
    assert 0.1 <= len(validation) / len(images) <= 0.45


def test_split_by_image_of_crop_pairs_and_the_tricky_case():
    pairs = [(f"{c}{i}.png", c) for c in "abc" for i in range(5)] + [("lone.png", "d")]
    train, validation = split_by_image(pairs, 0.2, 0)
    assert sorted(label for _, label in validation) == ["a", "b", "c"]
    assert ("lone.png", "d") in train
    # x only appears with y and z, each also in one other image: x is validated without
    # taking the last training image of y or z
    items = [("A", "x y"), ("B", "x z"), ("C", "y"), ("D", "z")]
    train, validation = split_by_image(items, 0.5, 1, labels_of=lambda item: item[1].split())
    assert {n for _, l in train for n in l.split()} == {"x", "y", "z"}
    assert "x" in {n for _, l in validation for n in l.split()}
    assert split_by_image(pairs, 0, 0) == (pairs, [])


@pytest.mark.parametrize("seed", range(8))
def test_split_by_image_gives_back_a_class_its_last_training_image(seed):
    """z is never any image's rarest class: the strata of a and b may send both its images
    to validation, and the split must then give one back and still validate a and b."""
    items = [("P", "a z"), ("R", "a"), ("Q", "b z"), ("S", "b")]
    train, validation = split_by_image(items, 0.5, seed, labels_of=lambda item: item[1].split())
    for part in (train, validation):
        assert {n for _, labels in part for n in labels.split()} == {"a", "b", "z"}


# ---------------------------------------------------------------- windows

def _rectangles(shape, boxes, value=255):
    image = np.zeros(shape, np.uint8)
    for x0, y0, x1, y1 in np.asarray(boxes, int):
        image[y0:y1, x0:x1] = value
    return image


def _components(patch):
    """(longer side, centre offset from the window centre) of each blob of ink > 0.5."""
    ink = (patch.max(axis=0) > 0.5).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(ink)
    h, w = ink.shape
    return [(max(bw, bh), (x + bw / 2 - w / 2, y + bh / 2 - h / 2)) for x, y, bw, bh, _ in stats[1:]]


@pytest.mark.parametrize("box, window, channels", [
    ((150, 120, 190, 140), (32, 32), 1),  # a positive's scale near 1
    ((60, 70, 360, 250), (32, 32), 1),  # shrunk about 14 times: through the halved levels
    ((200, 150, 210, 158), (32, 32), 3),  # enlarged twice
    ((100, 100, 130, 170), (24, 40), 3),  # tall object, wide window
])
def test_positive_targets_are_where_the_object_is(box, window, channels):
    shape = (300, 420) if channels == 1 else (300, 420, 3)
    image = _rectangles(shape, [box])
    x, targets, source = positive_windows(image, [box], window, OBJECT_SIZE, np.random.default_rng(5), per_box=40)
    assert x.shape == (40, channels, *window) and x.dtype == np.float32 and targets.dtype == np.float32
    assert (source == 0).all() and 0 <= x.min() and x.max() <= 1
    side = min(window)
    for patch, target in zip(x, targets):
        ys, xs = np.nonzero(patch.max(axis=0) > 0.5)
        ink = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_allclose(ink, np.clip(target, 0, [window[1], window[0]] * 2), atol=1.0)
        size = max(target[2] - target[0], target[3] - target[1]) / (OBJECT_SIZE * side)
        assert 0.995 / JITTER <= size <= JITTER * 1.005  # whole-pixel regions: within 0.5% of the scale
        centre = ((target[0] + target[2]) / 2 - window[1] / 2, (target[1] + target[3]) / 2 - window[0] / 2)
        assert max(abs(c) for c in centre) <= SHIFT + 0.5 + 0.02  # the offset is rounded to whole pixels
    sizes = [max(t[2] - t[0], t[3] - t[1]) / (OBJECT_SIZE * side) for t in targets]
    assert max(sizes) / min(sizes) > JITTER  # the jitter is used, not only allowed


@pytest.mark.parametrize("object_pixels, interpolation, scale", [(41.6, cv2.INTER_AREA, 0.5),
                                                                 (10.4, cv2.INTER_LINEAR, 2.0),
                                                                 (20.8, cv2.INTER_LINEAR, 1.0)])
def test_a_positive_window_is_a_window_of_the_resized_image(object_pixels, interpolation, scale):
    """At a scale with whole pixels (no jitter), the window equals a crop of the image resized
    as the detector resizes it."""
    image = cv2.GaussianBlur(_noise(9, (160, 200, 3)), (0, 0), 1.5)
    box = np.array([[80, 60, 80 + object_pixels, 60 + object_pixels / 2]])
    x, targets, _ = positive_windows(image, box, WINDOW, OBJECT_SIZE, np.random.default_rng(0), per_box=4,
                                     scale_jitter=1.0, shift=3.0)
    level = cv2.resize(image.astype(np.float32) / 255, (round(200 * scale), round(160 * scale)),
                       interpolation=interpolation)
    for patch, target in zip(x, targets):
        x0, y0 = target[0] - box[0, 0] * scale, target[1] - box[0, 1] * scale  # where the level's origin lands
        assert x0 == round(x0) and y0 == round(y0)
        reference = level[-int(y0):-int(y0) + 32, -int(x0):-int(x0) + 32].transpose(2, 0, 1)
        np.testing.assert_allclose(patch, reference, atol=2e-6)


def test_positive_windows_flip_mirrors_window_and_box():
    image = _rectangles((200, 200), [(80, 90, 120, 100), (80, 100, 90, 120)])  # an L: not symmetric
    box = [(80, 90, 120, 120)]
    plain, targets, _ = positive_windows(image, box, WINDOW, OBJECT_SIZE, np.random.default_rng(1), per_box=30)
    flipped, flipped_targets, _ = positive_windows(image, box, WINDOW, OBJECT_SIZE, np.random.default_rng(1),
                                                   per_box=30, flip=True)
    mirrored = np.array([not np.array_equal(a, b) for a, b in zip(plain, flipped)])
    assert 5 < mirrored.sum() < 25
    for patch, target in zip(flipped, flipped_targets):
        ys, xs = np.nonzero(patch[0] > 0.5)
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], target, atol=1.0)
    left_heavy = [p[0, :, :16].sum() > p[0, :, 16:].sum() for p in flipped]
    np.testing.assert_array_equal(left_heavy, ~mirrored)  # the L's foot is on the left unless mirrored


BOXES = np.array([[50, 60, 90, 80], [200, 100, 330, 260], [30, 200, 45, 240], [120, 150, 150, 180]])


@pytest.mark.parametrize("kinds", [None, "empty", "off-centre", "too small", "too large"])
def test_negative_windows_never_hold_a_centred_object_of_the_right_size(kinds):
    image = _rectangles((300, 400), BOXES)
    x = negative_windows(image, BOXES, WINDOW, OBJECT_SIZE, np.random.default_rng(2), 200, kinds=kinds)
    assert x.shape == (200, 1, 32, 32) and x.dtype == np.float32
    right = OBJECT_SIZE * 32
    for patch in x:
        for size, centre in _components(patch):
            assert not (right / JITTER - 1 <= size <= right * JITTER + 1 and max(map(abs, centre)) <= SHIFT + 1)
    blobs = [_components(p) for p in x]
    if kinds == "too small":  # the object is there, centred, and small
        assert all(any(s <= right / WRONG_SIZE + 1 and max(map(abs, c)) <= SHIFT + 1 for s, c in b) for b in blobs)
    if kinds == "off-centre":  # an object of the right size is there (maybe cut by the edge), off centre
        far = OFF_CENTRE[0] * 32 - 1
        assert all(any(math.hypot(*c) >= far / 2 for s, c in b) for b in blobs)
    if kinds == "empty":
        assert np.mean([len(b) == 0 for b in blobs]) > 0.3


def test_the_same_windows_would_be_positives():
    """The check above can fail: positives of the same image do hold such an object."""
    image = _rectangles((300, 400), BOXES)
    x, _, _ = positive_windows(image, BOXES, WINDOW, OBJECT_SIZE, np.random.default_rng(2), per_box=5)
    right = OBJECT_SIZE * 32
    assert all(any(right / JITTER - 1 <= s <= right * JITTER + 1 and max(map(abs, c)) <= SHIFT + 1
                   for s, c in _components(p)) for p in x)


def test_negative_windows_stay_off_ignore_boxes_and_are_empty_without_boxes():
    image = np.dstack([_rectangles((300, 400), BOXES)] * 3)
    image[20:120, 250:390] = (0, 0, 255)  # a crowd, in red
    crowd = [[250, 20, 390, 120]]
    x = negative_windows(image, BOXES, WINDOW, OBJECT_SIZE, np.random.default_rng(3), 150, ignore_boxes=crowd)
    assert len(x) == 150 and not (x[:, 2] - x[:, 0] > 0.1).any()
    x = negative_windows(image, BOXES, WINDOW, OBJECT_SIZE, np.random.default_rng(3), 150)
    assert (x[:, 2] - x[:, 0] > 0.1).any()  # without them, the crowd is sampled
    empty = negative_windows(image[:, :, 0], [], WINDOW, OBJECT_SIZE, np.random.default_rng(3), 20)
    assert empty.shape == (20, 1, 32, 32)


def test_windows_are_deterministic_given_the_generator():
    image = _noise(4, (120, 160, 3))
    for cut in (lambda rng: positive_windows(image, BOXES[:1] / 3, WINDOW, OBJECT_SIZE, rng)[0],
                lambda rng: negative_windows(image, BOXES / 3, WINDOW, OBJECT_SIZE, rng, 30),
                lambda rng: random_windows(image, WINDOW, rng, 30)):
        a, b, c = cut(np.random.default_rng(8)), cut(np.random.default_rng(8)), cut(np.random.default_rng(9))
        np.testing.assert_array_equal(a, b)
        assert a.shape == c.shape and not np.array_equal(a, c)


def test_random_windows_cover_the_scales_of_a_pyramid_inside_the_image():
    ramp = np.tile(np.arange(300, dtype=np.float64) / 299, (200, 1))  # 0 at the left edge, 1 at the right
    x = random_windows(ramp, WINDOW, np.random.default_rng(0), 80)
    assert x.shape == (80, 1, 32, 32)
    left, right = x[:, 0, :, 0].mean(axis=1), x[:, 0, :, -1].mean(axis=1)
    footprint = (right - left) * 299 * 32 / 31  # image pixels across the window
    assert footprint.min() >= 32 - 1 and footprint.max() <= 200 + 1  # no enlargement; fits the image
    assert footprint.min() < 40 and footprint.max() > 150  # both ends of the range are visited
    assert left.min() >= -1e-6 and right.max() <= 1 + 1e-6
    small = random_windows(_noise(0, (20, 25, 3)), WINDOW, np.random.default_rng(0), 3)
    assert small.shape == (3, 3, 32, 32)  # enlarged to fit
    with pytest.raises(ValueError, match="window"):
        random_windows(ramp, (0, 32), np.random.default_rng(0), 3)


# ---------------------------------------------------------------- shapes

def test_disc_colours_have_equal_gray_but_differ_in_colour():
    teal, orange = (np.uint8([[COLOURS[k]]]) for k in ("teal disc", "orange disc"))
    assert cv2.cvtColor(teal, cv2.COLOR_BGR2GRAY) == cv2.cvtColor(orange, cv2.COLOR_BGR2GRAY)
    weights = np.array([0.114, 0.587, 0.299])  # as float images are converted
    assert abs(weights @ COLOURS["teal disc"] - weights @ COLOURS["orange disc"]) < 0.01
    assert np.abs(teal.astype(int) - orange).max() > 100


@pytest.mark.parametrize("kind, angle", [("teal disc", 0), ("square", 0), ("square", 17), ("orange disc", 0)])
def test_a_shape_fills_its_box(kind, angle):
    canvas = np.zeros((80, 90, 3), np.float32)
    box = (20.3, 11.6, 63.1, 54.4)
    draw_shape(canvas, kind, box, angle)
    cover = canvas.max(axis=2) / max(COLOURS[kind])
    ys, xs = np.nonzero(cover > 0.5)
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=0.75)
    side = box[2] - box[0]
    area = math.pi * side ** 2 / 4 if "disc" in kind else (side / (abs(math.cos(math.radians(angle)))
                                                                     + abs(math.sin(math.radians(angle))))) ** 2
    assert cover.sum() == pytest.approx(area, rel=0.01)


def test_write_shapes_boxes_match_the_drawn_pixels(tmp_path):
    path = write_shapes(tmp_path / "shapes", 12, seed=4, negatives=2)
    data = read_coco(path)
    assert data.classes == list(COLOURS)
    assert len(data.images) == 12 and len(list_images(tmp_path / "shapes" / "negatives")) == 2
    gray = {}
    for item in data.images:
        image = load_image(item.path, 3)
        assert 1 <= len(item.boxes) <= 6
        for box, label in zip(item.boxes, item.labels):
            side = max(box[2] - box[0], box[3] - box[1])
            assert 14 <= side <= 70 and box[0] >= 0 and box[3] <= item.height
            cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
            assert tuple(image[cy, cx]) == COLOURS[label]
            gray.setdefault(label, set()).add(int(load_image(item.path, 1)[cy, cx]))
        for label, colour in COLOURS.items():  # every solid patch of a shape colour is inside its box
            solid = cv2.erode((image == colour).all(axis=2).astype(np.uint8), np.ones((3, 3), np.uint8))
            for y, x in zip(*np.nonzero(solid)):
                assert any(b[0] - 1 <= x and x + 1 <= b[2] + 1 and b[1] - 1 <= y and y + 1 <= b[3] + 1
                           for b, l in zip(item.boxes, item.labels) if l == label), (item.path, label, x, y)
        for i, a in enumerate(item.boxes):  # apart
            for b in item.boxes[i + 1:]:
                assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])
    assert gray["teal disc"] == gray["orange disc"]  # the same gray, seen as the detector sees it
    again = write_shapes(tmp_path / "again", 12, seed=4)
    assert json.loads(open(again).read())["annotations"] == json.loads(open(path).read())["annotations"]
    assert open(tmp_path / "again" / "00007.png", "rb").read() == open(tmp_path / "shapes" / "00007.png", "rb").read()


def test_write_shapes_on_photographs(tmp_path):
    photos = [cv2.GaussianBlur(_noise(1, (150, 200)), (0, 0), 3), _noise(2, (400, 500, 3))]
    data = read_coco(write_shapes(tmp_path, 4, seed=1, size=(160, 120), photos=photos))
    assert [load_image(item.path, 3).shape for item in data.images] == [(120, 160, 3)] * 4
    assert {label for item in data.images for label in item.labels} == set(COLOURS)
