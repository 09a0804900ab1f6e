"""COCO-style AP against pycocotools' COCOeval, and against cases worked out by hand."""
import contextlib
import io

import numpy as np
import pytest

from detector.evaluate import coco_average_precision, coco_iou, mean_average_precision

CLASSES = ["cat", "dog", "bird", "fish"]  # "fish" never has ground truth, only false positives


def xywh(box):
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def cocoeval(images, classes):
    """The same figures from pycocotools, with COCO objects built in memory."""
    COCO = pytest.importorskip("pycocotools.coco").COCO
    COCOeval = pytest.importorskip("pycocotools.cocoeval").COCOeval
    category = {c: k for k, c in enumerate(classes, 1)}
    gts, dts = [], []
    for image_id, (detections, boxes, labels, *crowd) in enumerate(images, 1):
        flags = crowd[0] if crowd else [False] * len(boxes)
        for box, label, is_crowd in zip(boxes, labels, flags):
            bbox = xywh(box)
            # ids from 1: COCOeval takes a match to id 0 for no match
            gts.append({"id": len(gts) + 1, "image_id": image_id, "category_id": category[label],
                        "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": int(is_crowd)})
        dts += [{"image_id": image_id, "category_id": category[label], "bbox": xywh(box), "score": float(score)}
                for box, label, score in detections]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in range(1, len(images) + 1)],
                      "categories": [{"id": k} for k in category.values()], "annotations": gts}
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(dts), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    precision = evaluation.eval["precision"][:, :, :, 0, 2]  # (T, R, K) at area "all", maxDets 100
    per_class = {c: {"ap": precision[:, :, k].mean(), "ap50": precision[0, :, k].mean(), "ap75": precision[5, :, k].mean()}
                 for k, c in enumerate(classes) if precision[0, 0, k] > -1}
    stats = evaluation.stats
    return {"ap": stats[0], "ap50": stats[1], "ap75": stats[2], "per_class": per_class}


def jitter(rng, box, scale):
    """A copy of ``box`` moved and resized by up to ``scale`` of its size, never inverted."""
    box = np.asarray(box, np.float64)
    size = box[2:] - box[:2]
    x0y0 = box[:2] + rng.normal(0, scale, 2) * size
    return np.concatenate([x0y0, x0y0 + size * np.exp(rng.normal(0, scale, 2))])


def tied_score(rng):
    return round(float(rng.uniform(0.05, 1)), 1)  # one decimal: many equal scores


def random_images(seed, n_images=25, crowd=False, crowded_image=False):
    """Ground truth over three classes (some images have none), detections that are jittered
    copies, duplicates, mislabelled copies and false positives, scores rounded into ties."""
    rng = np.random.default_rng(seed)
    drop_birds = seed % 2 == 0  # then "bird" has ground truth but no detection
    images = []
    for _ in range(n_images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.hstack([xy, xy + rng.uniform(4, 80, (n, 2))])
        labels = rng.choice(CLASSES[:3], n).tolist()
        detections = []
        for box, label in zip(boxes, labels):
            copies = int(rng.random() < 0.85) + int(rng.random() < 0.3)  # missed, found, or found twice
            detections += [(jitter(rng, box, rng.uniform(0, 0.25)), label, tied_score(rng)) for _ in range(copies)]
            if rng.random() < 0.1:
                detections.append((jitter(rng, box, 0.05), str(rng.choice(CLASSES)), tied_score(rng)))
        for _ in range(int(rng.integers(0, 4))):
            xy = rng.uniform(0, 300, 2)
            box = np.concatenate([xy, xy + rng.uniform(4, 80, 2)])
            detections.append((box, str(rng.choice(CLASSES)), tied_score(rng)))
        if drop_birds:
            detections = [d for d in detections if d[1] != "bird"]
        order = rng.permutation(len(detections))
        image = ([detections[i] for i in order], boxes, labels)
        images.append(image + ((rng.random(n) < 0.2).tolist(),) if crowd else image)
    if crowded_image:
        # past maxDets: 130 confident false positives of one class crowd out real finds
        xy = rng.uniform(0, 300, (130, 2))
        fps = [(np.concatenate([p, p + 20]), "cat", round(float(rng.uniform(0.5, 1)), 2)) for p in xy]
        images[0] = (images[0][0] + fps,) + images[0][1:]
    return images


def assert_same(ours, reference):
    for key in ("ap", "ap50", "ap75"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-9, rel=0), key
    assert ours["per_class"].keys() == reference["per_class"].keys()
    for c, figures in reference["per_class"].items():
        for key, value in figures.items():
            assert ours["per_class"][c][key] == pytest.approx(value, abs=1e-9, rel=0), (c, key)


@pytest.mark.parametrize("seed", range(6))
def test_coco_ap_equals_cocoeval_on_random_data(seed):
    images = random_images(seed)
    assert_same(coco_average_precision(images, CLASSES), cocoeval(images, CLASSES))


@pytest.mark.parametrize("seed", range(3))
def test_coco_ap_equals_cocoeval_with_crowd_boxes(seed):
    images = random_images(100 + seed, crowd=True)
    assert any(any(image[3]) for image in images)
    assert_same(coco_average_precision(images, CLASSES), cocoeval(images, CLASSES))


def test_coco_ap_keeps_the_best_100_per_image_and_class_as_cocoeval_does():
    images = random_images(7, crowded_image=True)
    ours = coco_average_precision(images, CLASSES)
    assert_same(ours, cocoeval(images, CLASSES))
    assert coco_average_precision(images, CLASSES, max_detections=1000)["per_class"]["cat"] != ours["per_class"]["cat"]


def test_iou_is_pycocotools_iou_to_the_last_bit():
    mask = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (40, 2))
    boxes = np.hstack([xy, xy + rng.uniform(1, 50, (40, 2))])
    crowd = rng.random(15) < 0.3
    expected = mask.iou([xywh(b) for b in boxes[:25]], [xywh(b) for b in boxes[25:]], crowd.astype(np.uint8).tolist())
    assert np.array_equal(coco_iou(boxes[:25], boxes[25:], crowd), expected)


def test_perfect_detections_give_one():
    images = [(list(zip(boxes, labels, np.linspace(1, 0.5, len(boxes)))), boxes, labels)
              for _, boxes, labels in random_images(3)]
    result = coco_average_precision(images, CLASSES)
    # 1 - 2e-16 rather than 1: COCOeval's epsilon in the precision's denominator
    assert [result[k] for k in ("ap", "ap50", "ap75")] == pytest.approx([1, 1, 1], abs=1e-12)
    assert set(result["per_class"]) == {"cat", "dog", "bird"}  # "fish" has no ground truth


def test_no_detections_give_zero():
    images = [([], boxes, labels) for _, boxes, labels in random_images(3)]
    result = coco_average_precision(images, CLASSES)
    assert (result["ap"], result["ap50"], result["ap75"]) == (0.0, 0.0, 0.0)


def test_no_ground_truth_gives_nan_and_no_classes():
    result = coco_average_precision([([((0, 0, 10, 10), "cat", 0.9)], [], [])], CLASSES)
    assert np.isnan(result["ap"]) and result["per_class"] == {}


def test_an_iou_of_0_7_counts_at_five_of_ten_thresholds():
    # one object, one detection covering 70% of it: 7000 / 10000 is exactly the double 0.7,
    # and so is the fifth threshold. At 0.5 ... 0.7 the one detection is a hit ranked first,
    # precision 1 at every recall: AP 1. At 0.75 ... 0.95 it misses: AP 0. Mean: 5/10.
    images = [([((0, 0, 100, 70), "cat", 0.9)], [[0, 0, 100, 100]], ["cat"])]
    result = coco_average_precision(images, ["cat"])
    assert (result["ap"], result["ap50"], result["ap75"]) == pytest.approx((0.5, 1, 0), abs=1e-12)
    assert_same(result, cocoeval(images, ["cat"]))


def perfectly_ranked(found, missed, false_positives):
    """Hits scored above every false positive: ``found`` of ``found + missed`` objects."""
    gt = [[100 * i, 0, 100 * i + 50, 50] for i in range(found + missed)]
    hits = [((x0 + 1, y0, x1 + 1, y1), "cat", 0.9 - 0.01 * i) for i, (x0, y0, x1, y1) in enumerate(gt[:found])]
    fps = [((0, 500 + 100 * i, 50, 550 + 100 * i), "cat", 0.3) for i in range(false_positives)]
    return [(hits + fps, gt, ["cat"] * len(gt))]


def test_voc_map_and_coco_ap50_agree_on_a_perfect_ranking_at_full_recall():
    images = perfectly_ranked(found=4, missed=0, false_positives=3)
    assert coco_average_precision(images, ["cat"])["ap50"] == pytest.approx(1, abs=1e-12)
    assert mean_average_precision(images, ["cat"])["map"] == pytest.approx(1)


def test_voc_map_and_coco_ap50_differ_by_the_101_point_sampling_at_partial_recall():
    # recall stops at 3/4 with precision 1 up to it: VOC takes the area, 0.75; COCO counts the
    # recall thresholds 0, 0.01, ..., 0.75 that are reached, 76 of 101
    images = perfectly_ranked(found=3, missed=1, false_positives=3)
    assert mean_average_precision(images, ["cat"])["map"] == pytest.approx(0.75)
    assert coco_average_precision(images, ["cat"])["ap50"] == pytest.approx(76 / 101, abs=1e-12)


def test_coco_matches_the_best_free_box_where_voc_gives_up():
    # the second detection overlaps the claimed box most but the free one enough:
    # COCO matches it to the free box (AP 1), VOC counts it a false positive (recall 1/2)
    gt = [[0, 0, 100, 100], [20, 0, 120, 100]]
    detections = [((0, 0, 100, 100), "cat", 0.9), ((5, 0, 105, 100), "cat", 0.8)]  # IoU .90 and .74
    images = [(detections, gt, ["cat", "cat"])]
    assert coco_average_precision(images, ["cat"])["ap50"] == pytest.approx(1, abs=1e-12)
    assert mean_average_precision(images, ["cat"])["map"] == pytest.approx(0.5)
    assert_same(coco_average_precision(images, ["cat"]), cocoeval(images, ["cat"]))


def test_an_overlap_tie_goes_to_the_later_box_as_in_cocoeval():
    # the first detection overlaps both objects by exactly 9000 / 11000; COCOeval gives it the
    # later one, which leaves the earlier for the second detection at IoU 1 instead of 2/3
    gt = [[0, 0, 100, 100], [20, 0, 120, 100]]
    detections = [((10, 0, 110, 100), "cat", 0.9), ((0, 0, 100, 100), "cat", 0.8)]
    images = [(detections, gt, ["cat", "cat"])]
    result = coco_average_precision(images, ["cat"])
    # both hit up to 0.8 (7 thresholds, AP 1); above, a miss then a hit: precision 1/2 at
    # recalls 0 ... 0.5, 51 of the 101 points
    assert result["ap"] == pytest.approx((7 + 3 * 0.5 * 51 / 101) / 10, abs=1e-12)
    assert_same(result, cocoeval(images, ["cat"]))


def test_a_detection_takes_an_ordinary_box_before_a_crowd_box():
    # it overlaps the crowd box more, but a free ordinary box enough: a hit, not ignored
    gt, crowd = [[0, 0, 100, 100], [0, 0, 200, 200]], [False, True]
    images = [([((0, 0, 110, 110), "cat", 0.9), ((100, 100, 150, 150), "cat", 0.8)], gt, ["cat", "cat"], crowd)]
    result = coco_average_precision(images, ["cat"])
    assert result["ap50"] == pytest.approx(1, abs=1e-12)  # the second lies in the crowd: ignored
    assert_same(result, cocoeval(images, ["cat"]))
