"""Generated patches: deterministic, balanced, and labelled by what was drawn."""
import numpy as np
import pytest

from detector import data


def test_same_seed_same_data_other_seed_other_data():
    a, la = data.patches(60, seed=7)
    b, lb = data.patches(60, seed=7)
    c, _ = data.patches(60, seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.shape == (60, 1, 32, 32)
    assert a.min() >= 0 and a.max() <= 1


@pytest.mark.parametrize("n", [1, 11, 100, 1003])
def test_classes_are_balanced_as_documented(n):
    _, labels = data.patches(n, seed=1)
    counts = np.bincount(labels, minlength=11)
    assert counts.sum() == n
    assert counts[0] == round(n * data.BACKGROUND_FRACTION)
    assert counts[1:].max() - counts[1:].min() <= 1


def test_labels_match_what_was_drawn(monkeypatch):
    """A digit patch has exactly one digit centred (within JITTER) at 50-80% of the window,
    of the labelled class; a background patch has none."""
    drawn = []
    real = data.draw_digit

    def spy(canvas, digit, center, height, rng, value):
        drawn[-1].append((int(digit), center, height))
        return real(canvas, digit, center, height, rng, value)

    real_clutter = data.clutter

    def clutter_marks_a_new_patch(shape, rng):
        drawn.append([])
        return real_clutter(shape, rng)

    monkeypatch.setattr(data, "draw_digit", spy)
    monkeypatch.setattr(data, "clutter", clutter_marks_a_new_patch)
    _, labels = data.patches(400, seed=3)
    assert len(drawn) == 400
    middle = (data.WINDOW - 1) / 2
    low, high = (f * data.WINDOW for f in data.DIGIT_HEIGHT)
    for label, digits in zip(labels, drawn):
        centred = [d for d, (cx, cy), h in digits
                   if abs(cx - middle) <= data.JITTER and abs(cy - middle) <= data.JITTER and low <= h <= high]
        if label == 0:
            assert centred == []
        else:
            assert centred == [label - 1]


def test_drawn_digit_has_the_requested_size_and_place():
    rng = np.random.default_rng(0)
    for digit in range(10):
        canvas = np.zeros((64, 64), np.float32)
        x0, y0, x1, y1 = data.draw_digit(canvas, digit, (30.0, 33.0), 24.0, rng, 1.0)
        ys, xs = np.nonzero(canvas > 0.5)
        assert abs((ys.min() + ys.max()) / 2 - 33) <= 2.5
        assert abs((xs.min() + xs.max()) / 2 - 30) <= 2.5
        assert 18 <= ys.max() - ys.min() + 1 <= 28  # 24 px, give or take rotation and anti-aliasing


def test_preview_grid(tmp_path):
    from detector.cli import main

    out = tmp_path / "grid.png"
    assert main(["data", "preview", "--out", str(out), "--n", "20"]) == 0
    import cv2
    grid = cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)
    assert grid is not None and grid.shape[1] == 16 * 96 and grid.shape[0] == 2 * (96 + 14)
