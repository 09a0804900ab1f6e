"""NMS against OpenCV's, and average precision against hand-computed cases."""
import cv2
import numpy as np
import pytest

from detector.evaluate import average_precision, match, mean_average_precision
from detector.nms import iou, nms


def random_boxes(n, seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(5, 40, (n, 2))
    return np.hstack([xy, xy + wh]), rng.random(n)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5, 0.7])
def test_nms_keeps_what_opencv_keeps(seed, threshold):
    boxes, scores = random_boxes(60, seed)
    xywh = [[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in boxes]
    expected = np.array(cv2.dnn.NMSBoxes(xywh, scores.tolist(), 0.0, threshold)).reshape(-1)
    kept = nms(boxes, scores, threshold)
    assert sorted(kept.tolist()) == sorted(expected.tolist())
    assert list(scores[kept]) == sorted(scores[kept], reverse=True)


def test_per_class_nms_never_suppresses_across_classes():
    boxes, scores = random_boxes(80, 1)
    labels = np.random.default_rng(2).integers(0, 3, 80)
    kept = nms(boxes, scores, 0.3, labels)
    expected = []
    for c in range(3):
        idx = np.flatnonzero(labels == c)
        expected += idx[nms(boxes[idx], scores[idx], 0.3)].tolist()
    assert sorted(kept.tolist()) == sorted(expected)
    assert len(nms(boxes, scores, 0.3, labels, max_detections=5)) == 5


def test_iou_of_known_boxes():
    np.testing.assert_allclose(iou(np.array([0, 0, 10, 10]), np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])),
                               [50 / 150, 0, 1])


def test_average_precision_by_hand():
    # two objects; detections best first: hit, miss, hit -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    assert average_precision([1, 0, 1], [0.9, 0.8, 0.7], 2) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # the envelope: a later, better precision lifts the earlier recall steps
    assert average_precision([0, 1, 1], [0.9, 0.8, 0.7], 2) == pytest.approx(2 / 3)
    # one object never found caps recall at 1/2
    assert average_precision([1], [0.9], 2) == pytest.approx(0.5)
    assert average_precision([], [], 3) == 0.0


def test_duplicates_of_one_object_count_as_false_positives():
    gt = np.array([[0, 0, 10, 10]])
    flags = match([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], [0.9, 0.95, 0.5], gt)
    assert flags.tolist() == [False, True, False]  # the best-scored claims it; the others miss


def test_mean_average_precision_over_images_and_classes():
    images = [
        ([((0, 0, 10, 10), "1", 0.9), ((20, 20, 30, 30), "2", 0.8)], [[0, 0, 10, 10], [20, 20, 30, 30]], ["1", "2"]),
        ([((0, 0, 10, 10), "2", 0.7)], [[0, 0, 10, 10]], ["1"]),  # a miss and a false positive
    ]
    result = mean_average_precision(images, ["1", "2", "3"])
    assert result["ap"]["1"] == pytest.approx(0.5)
    assert result["ap"]["2"] == pytest.approx(1.0)
    assert "3" not in result["ap"] and result["map"] == pytest.approx(0.75)


def test_a_long_nms_pass_runs_the_check_so_a_deadline_can_stop_it():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 1000, (3000, 2))
    boxes = np.hstack([corners, corners + 5])
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise TimeoutError("deadline")

    with pytest.raises(TimeoutError):
        nms(boxes, rng.random(3000), 1.0, check=check, check_every=100)
    assert len(calls) == 3
    assert len(nms(boxes, rng.random(3000), 1.0, check=lambda: None)) == 3000  # a check that passes changes nothing
