"""detect(): boxes in image coordinates, both modes alike, the knobs, and clear errors."""
import json

import cv2
import numpy as np
import pytest

import detector
from detector.datasets import digits
from detector.cli import main
from detector.detect import detect, level_boxes, pyramid_scales
from detector.model import Net
from detector.evaluate import match
from detector.nms import iou


@pytest.fixture(scope="module")
def net():
    return detector.load_model()


def one_digit_scene(digit, height, center, size=(200, 150), seed=0):
    rng = np.random.default_rng(seed)
    canvas = digits.clutter(size[::-1], rng)
    style = digits.random_style(rng, digits.FONTS["train"])
    box = digits.draw(canvas, str(digit), center, height, style, digits.ink_colour(canvas, rng))[0]
    return (digits.finish(canvas, rng) * 255).round().astype(np.uint8), np.array(box)


@pytest.mark.parametrize("height", [18, 30, 55, 90])
def test_digits_of_any_size_are_found_where_they_are(net, height):
    image, truth = one_digit_scene(4, height, (110.0, 80.0), size=(240, 200))
    found = detect(image, net, class_agnostic=True).detections
    best = max(found, key=lambda d: iou(np.array(d.box), truth[None])[0])
    assert best.label == "4" and iou(np.array(best.box), truth[None])[0] >= 0.5


def test_window_boxes_map_back_through_the_level_scale():
    net = Net(box_aspects={"7": 0.5})
    probs = np.zeros((11, 5, 6), np.float32)
    probs[0] = 1
    probs[:, 2, 3] = 0
    probs[8, 2, 3] = 0.9  # digit "7" at map row 2, column 3
    boxes, scores, labels = level_boxes(probs, np.empty((0, 5, 6)), net, 4, (0.5, 0.25), 0.5)
    assert labels.tolist() == [8] and scores == pytest.approx([0.9])
    cx, cy = (boxes[0, 0] + boxes[0, 2]) / 2, (boxes[0, 1] + boxes[0, 3]) / 2
    assert (cx, cy) == pytest.approx(((3 * 4 + 16) / 0.5, (2 * 4 + 16) / 0.25))
    # the prior box: the longer side (height, aspect 0.5) is the object size in the level
    assert boxes[0, 3] - boxes[0, 1] == pytest.approx(net.object_pixels / 0.25)
    assert boxes[0, 2] - boxes[0, 0] == pytest.approx(0.5 * net.object_pixels / 0.5)


def test_a_box_head_moves_and_stretches_the_prior_box():
    net = Net(box_regression=True)
    probs = np.zeros((11, 3, 3), np.float32)
    probs[0] = 1
    probs[:, 1, 1] = 0
    probs[3, 1, 1] = 0.8  # digit "2" at the centre cell
    offsets = np.zeros((4, 3, 3), np.float32)
    offsets[:, 1, 1] = (0.1, -0.2, np.log(1.5), np.log(0.5))
    boxes, _, labels = level_boxes(probs, offsets, net, 4, (1.0, 1.0), 0.5)
    side = net.object_pixels  # aspect 1: a square prior
    expected = (4 + 16 + 0.1 * side, 4 + 16 - 0.2 * side, 1.5 * side, 0.5 * side)
    cx, cy, w, h = ((boxes[0, 0] + boxes[0, 2]) / 2, (boxes[0, 1] + boxes[0, 3]) / 2,
                    boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1])
    assert labels.tolist() == [3] and (cx, cy, w, h) == pytest.approx(expected)


def test_the_background_class_is_the_models_own():
    net = Net("conv3@5x5 relu maxpool4 fc3", (1, 12, 12), ["cat", "nothing", "dog"], background="nothing")
    probs = np.zeros((3, 2, 2), np.float32)
    probs[1] = 1  # "nothing" everywhere but one cell, where "cat" wins
    probs[:, 0, 1] = (0.7, 0.3, 0.0)
    boxes, scores, labels = level_boxes(probs, np.empty((0, 2, 2)), net, 4, (1.0, 1.0), 0.5)
    assert labels.tolist() == [0] and scores == pytest.approx([0.7])


def test_default_model_finds_the_digits_of_a_scene(net):
    image, boxes, labels = digits.scene(4242, size=(480, 360))
    found = detect(image, net, class_agnostic=True).detections
    for box, label in zip(boxes, labels):
        mine = [d for d in found if d.label == label]
        assert match([d.box for d in mine], [d.score for d in mine], box[None]).any(), label


def test_both_modes_give_the_same_detections_and_maps(net):
    image, _, _ = digits.scene(11, size=(200, 150))
    fcn = detect(image, net, mode="fcn", return_maps=True)
    sliding = detect(image, net, mode="sliding", return_maps=True)
    assert [d.label for d in fcn.detections] == [d.label for d in sliding.detections]
    assert [d.score for d in fcn.detections] == pytest.approx([d.score for d in sliding.detections], abs=1e-4)
    assert np.allclose([d.box for d in fcn.detections], [d.box for d in sliding.detections], atol=1e-2)
    for a, b in zip(fcn.levels, sliding.levels):
        assert a.scale == b.scale and a.scores.shape == b.scores.shape
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_knobs(net):
    image, _, _ = digits.scene(12, size=(320, 240))
    many = detect(image, net, score_threshold=0.3).detections
    capped = detect(image, net, score_threshold=0.3, max_detections=3)
    assert len(capped.detections) == 3 and capped.truncated == len(many) - 3
    assert all(d.score >= 0.9 for d in detect(image, net, score_threshold=0.9).detections)
    agnostic = detect(image, net, score_threshold=0.3, class_agnostic=True).detections
    assert len(agnostic) <= len(many)
    assert len(detect(image, net, scales=[1.0], return_maps=True).levels) == 1
    scales = pyramid_scales(240, 320, (32, 32), net.object_pixels, min_size=20, max_size=100, scale_step=1.5)
    assert scales[0] == pytest.approx(net.object_pixels / 20) and all(
        a / b == pytest.approx(1.5) for a, b in zip(scales, scales[1:]))


def test_colour_and_float_images_give_the_same_answer_as_gray(net):
    gray, _, _ = digits.scene(13, size=(160, 120))
    expected = [(d.label, round(d.score, 4)) for d in detect(gray, net).detections]
    colour = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    assert [(d.label, round(d.score, 4)) for d in detect(colour, net).detections] == expected
    assert [(d.label, round(d.score, 4)) for d in detect(gray / np.float32(255), net).detections] == expected


@pytest.mark.parametrize("image, kwargs, error, message", [
    (np.zeros((20, 50), np.uint8), {}, ValueError, "the image is 20x50 .* window is 32x32"),
    (np.zeros((64, 64), np.int32), {}, TypeError, "uint8 or float"),
    (np.full((64, 64), 3.0), {}, ValueError, r"must lie in \[0, 1\]"),
    (np.zeros((64, 64, 2), np.uint8), {}, ValueError, "shape"),
    (np.zeros((64, 64), np.uint8), {"mode": "magic"}, ValueError, "mode must be one of"),
    (np.zeros((64, 64), np.uint8), {"score_threshold": 1.5}, ValueError, "score_threshold"),
    (np.zeros((64, 64), np.uint8), {"stride": 3}, ValueError, "must divide the net's total stride 4"),
    (np.zeros((64, 64), np.uint8), {"min_size": 0}, ValueError, "min_size"),
    (np.zeros((150, 200), np.uint8), {"scales": [0.1]}, ValueError, r"scales \[0.1\] shrink the 150x200"),
    (np.zeros((64, 64), np.uint8), {"scales": [-1.0]}, ValueError, "scales must be positive"),
    (np.zeros((64, 64), np.uint8), {"scales": [float("nan")]}, ValueError, "scales must be positive, finite"),
    (np.zeros((64, 64), np.uint8), {"scales": [float("inf")]}, ValueError, "scales must be positive, finite"),
    (np.zeros((64, 64), np.uint8), {"scales": [50.0]}, ValueError, "enlarges the image more than 4x"),
    (np.zeros((64, 64), np.uint8), {"scales": [0.5] * 41}, ValueError, "at most 40 scales"),
    (np.zeros((64, 64), np.uint8), {"scales": [float("nan")] * 4000}, ValueError, r"characters\)$"),
    (np.zeros((64, 64), np.uint8), {"scale_step": 1.0000001}, ValueError, "scale_step must be at least"),
    (np.zeros((64, 64), np.uint8), {"max_detections": 0}, ValueError, "max_detections"),
    (np.zeros((64, 64), np.uint8), {"stride": 1.5}, ValueError, "stride must be a whole number"),
    (np.zeros((64, 64), np.uint8), {"min_size": 0.5}, ValueError, "enlarges the image more than 4x"),
    (np.zeros((64, 64), np.uint8), {"min_size": float("nan")}, ValueError, "min_size"),
])
def test_bad_input_is_explained(net, image, kwargs, error, message):
    with pytest.raises(error, match=message):
        detect(image, net, **kwargs)


def test_detect_command_writes_json_pictures_and_coco(tmp_path, capsys):
    image, _, _ = digits.scene(14, size=(200, 150))
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), image)
    out, heat, coco = tmp_path / "boxes.png", tmp_path / "heat.png", tmp_path / "coco.json"
    assert main(["detect", str(path), "--json", "--out", str(out), "--heatmap", str(heat),
                 "--coco-json", str(coco), "--image-id", "7"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["image_size"] == {"width": 200, "height": 150} and printed["detections"]
    assert cv2.imread(str(out)).shape == (150, 200, 3)
    heat_picture = cv2.imread(str(heat))
    assert heat_picture.shape[0] > 150 and heat_picture.shape[1] > 200  # a title above, a colour bar beside
    results = json.loads(coco.read_text())
    first, det = results[0], printed["detections"][0]
    assert first["image_id"] == 7 and first["category_id"] == int(det["label"]) + 1
    assert first["bbox"] == pytest.approx([det["box"][0], det["box"][1], det["box"][2] - det["box"][0],
                                           det["box"][3] - det["box"][1]])


def test_eval_command_on_written_scenes(tmp_path, capsys):
    assert main(["data", "scenes", "--n", "3", "--seed", "900", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["eval", "--scenes", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"voc_map50", "ap50", "ap", "ap75", "per_class"} <= set(result) and result["images"] == 3
    assert 0.5 <= result["voc_map50"] <= 1 and 0 < result["ap"] <= result["ap50"] <= 1


def test_unreadable_image_is_a_clear_command_error(tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit) as exit_:
        main(["detect", str(tmp_path / "bad.png")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "bad.png: the bytes are not a PNG" in err and len(err.splitlines()) == 1
