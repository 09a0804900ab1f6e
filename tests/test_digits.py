"""The built-in digits: deterministic, balanced, split, and labelled by what was drawn."""
import hashlib
import os

import numpy as np
import pytest

from detector.datasets import digits, photos

MIDDLE = digits.WINDOW / 2  # the window's centre, in pixel-edge coordinates
LOW, HIGH = (f * digits.WINDOW for f in digits.DIGIT_HEIGHT)


class DrawSpy:
    """Records every run of glyphs drawn (with the canvas before and after) and, at each
    call of ``finish``, closes the current patch or scene."""

    def __init__(self, monkeypatch, keep_canvas=False):
        self.items, self.pending, self.keep_canvas = [], [], keep_canvas
        real_draw, real_finish = digits.draw, digits.finish

        def draw(canvas, text, center, height, style, ink, anchor=0):
            before = canvas.copy() if keep_canvas else None
            boxes = real_draw(canvas, text, center, height, style, ink, anchor)
            self.pending.append(dict(text=text, center=np.array(center, float), height=height, style=style,
                                     ink=np.array(ink, np.float32), anchor=anchor, boxes=boxes,
                                     before=before, after=canvas.copy() if keep_canvas else None))
            return boxes

        def finish(canvas, rng):
            self.items.append(self.pending)
            self.pending = []
            return real_finish(canvas, rng)

        monkeypatch.setattr(digits, "draw", draw)
        monkeypatch.setattr(digits, "finish", finish)

    def glyphs(self, item):
        """(char, box) of every glyph drawn in one patch."""
        return [(c, b) for run in item for c, b in zip(run["text"], run["boxes"])]


def centred(box, slack=1e-6):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return abs(cx - MIDDLE) <= digits.JITTER + slack and abs(cy - MIDDLE) <= digits.JITTER + slack


def positive_size(box, slack=1e-6):
    return LOW - slack <= box[3] - box[1] <= HIGH + slack


def ink_box(before, after, ink):
    """The box of pixels whose coverage (recovered from the blend) is at least one half, or
    None when the ink cannot be told from the background anywhere."""
    before, after = np.atleast_3d(before), np.atleast_3d(after)
    contrast = ink.reshape(1, 1, -1) - before
    usable = np.abs(contrast) > 0.2
    coverage = np.where(usable, (after - before) / np.where(usable, contrast, 1), 0).max(2)
    ys, xs = np.nonzero(coverage >= 0.5)
    if len(ys) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


# --------------------------------------------------------------------------------------------
# patches

@pytest.mark.parametrize("channels", [1, 3])
def test_same_seed_same_data_other_seed_other_data(channels):
    a, la, ba = digits.patches(60, seed=7, channels=channels)
    b, lb, bb = digits.patches(60, seed=7, channels=channels)
    c, _, _ = digits.patches(60, seed=8, channels=channels)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(ba, bb)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.shape == (60, channels, 32, 32)
    assert la.dtype == np.int64 and la.shape == (60,)
    assert ba.dtype == np.float32 and ba.shape == (60, 4)
    assert a.min() >= 0 and a.max() <= 1
    assert np.isnan(ba[la == 0]).all() and np.isfinite(ba[la > 0]).all()


@pytest.mark.parametrize("n,fraction", [(1, 0.5), (11, 0.5), (100, 0.5), (1003, 0.9)])
def test_classes_are_balanced_as_documented(n, fraction):
    _, labels, _ = digits.patches(n, seed=1, background_fraction=fraction)
    counts = np.bincount(labels, minlength=11)
    assert counts.sum() == n
    assert counts[0] == round(n * fraction)
    assert counts[1:].max() - counts[1:].min() <= 1
    np.testing.assert_array_equal(counts, digits.class_counts(n, fraction))


def test_labels_match_what_was_drawn(monkeypatch):
    """A digit patch has exactly one digit centred (within JITTER) at a positive height, of
    the labelled class, and its box is the one returned; a background patch has none. A
    digit centred at any other height is clearly too small or too large."""
    spy = DrawSpy(monkeypatch)
    _, labels, boxes = digits.patches(600, seed=3)
    assert len(spy.items) == 600
    kinds = {"neighbours": 0, "letters": 0, "too small": 0, "too large": 0}
    for label, box, item in zip(labels, boxes, spy.items):
        glyphs = spy.glyphs(item)
        hits = [(c, b) for c, b in glyphs if c.isdigit() and centred(b) and positive_size(b)]
        if label == 0:
            assert hits == []
        else:
            assert [c for c, _ in hits] == [str(label - 1)]
            np.testing.assert_allclose(box, hits[0][1], atol=1e-4)
            kinds["neighbours"] += len(glyphs) > 1
        for c, b in glyphs:
            if c.isdigit() and centred(b, slack=1.0) and not positive_size(b):
                height = b[3] - b[1]
                assert height <= digits.TOO_SMALL * LOW + 1e-6 or height >= digits.TOO_LARGE * HIGH - 1e-6
                kinds["too small" if height < LOW else "too large"] += 1
            kinds["letters"] += not c.isdigit()
    # the hard cases are there at all
    assert min(kinds.values()) >= 3, kinds


def test_digit_boxes_are_centred_at_a_positive_height():
    _, labels, boxes = digits.patches(300, seed=4, channels=3)
    for box in boxes[labels > 0]:
        assert centred(box) and positive_size(box)


def test_returned_boxes_match_the_ink_drawn_in_patches(monkeypatch):
    """The coverage recovered from each patch's canvas before and after drawing has the box
    that :func:`digits.draw` returned (up to hairlines thinner than half a pixel)."""
    spy = DrawSpy(monkeypatch, keep_canvas=True)
    digits.patches(200, seed=5, channels=3)
    errors = []
    for item in spy.items:
        for run in item:
            if len(run["text"]) != 1:
                continue
            b = run["boxes"][0]
            if b[0] < 0 or b[1] < 0 or b[2] > digits.WINDOW or b[3] > digits.WINDOW or b[3] - b[1] < 10:
                continue  # clipped by the window, or too small to measure
            found = ink_box(run["before"], run["after"], run["ink"])
            if found is not None:
                errors.append(np.abs(found - b))
    errors = np.array(errors)
    assert len(errors) > 40
    assert np.median(errors) <= 0.5
    assert np.percentile(errors, 90) <= 1.5


def test_drawn_digit_has_the_requested_size_and_place():
    """Upright, every font's digits have their ink box centred where asked and as tall as
    asked, to within a pixel (anti-aliasing)."""
    for font in digits.FONTS["train"] + digits.FONTS["held-out"]:
        for digit in "0123456789":
            canvas = np.zeros((64, 64), np.float32)
            box = digits.draw(canvas, digit, (30.0, 33.0), 24.0, digits.Style(font), [1.0])[0]
            np.testing.assert_allclose([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[3] - box[1]],
                                       [30, 33, 24], atol=1e-9)
            ys, xs = np.nonzero(canvas >= 0.5)
            assert abs((ys.min() + ys.max() + 1) / 2 - 33) <= 1, (font, digit)
            assert abs((xs.min() + xs.max() + 1) / 2 - 30) <= 1, (font, digit)
            assert abs(ys.max() + 1 - ys.min() - 24) <= 1, (font, digit)


def test_styled_digits_are_drawn_inside_their_boxes():
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(150):
        style = digits.random_style(rng, digits.FONTS["train"])
        canvas = np.zeros((100, 100), np.float32)
        box = digits.draw(canvas, str(rng.integers(10)), rng.uniform(40, 60, 2), rng.uniform(14, 40), style, [1.0])[0]
        ys, xs = np.nonzero(canvas >= 0.5)
        errors.append(np.abs([xs.min() - box[0], ys.min() - box[1], xs.max() + 1 - box[2], ys.max() + 1 - box[3]]))
        ys, xs = np.nonzero(canvas)  # faint coverage strays no further than interpolation reaches
        assert xs.min() >= box[0] - 2.5 and ys.min() >= box[1] - 2.5
        assert xs.max() + 1 <= box[2] + 2.5 and ys.max() + 1 <= box[3] + 2.5
    assert np.median(errors) <= 0.5 and np.percentile(errors, 95) <= 1.5


def test_the_style_varies_as_documented(monkeypatch):
    spy = DrawSpy(monkeypatch)
    digits.patches(400, seed=6)
    styles = [run["style"] for item in spy.items for run in item]
    assert {s.font for s in styles} == set(digits.FONTS["train"])
    assert {s.weight for s in styles} >= {-1, 0, 1, 2, 3}
    for name, limit in (("angle", digits.MAX_ROTATION), ("shear", digits.MAX_SHEAR)):
        values = np.array([getattr(s, name) for s in styles])
        assert np.abs(values).max() <= limit and values.min() < -limit / 2 and values.max() > limit / 2
    stretch = np.array([s.stretch for s in styles])
    assert np.abs(stretch - 1).max() <= digits.MAX_STRETCH and stretch.std() > digits.MAX_STRETCH / 4
    inks = np.array([run["ink"][0] for item in spy.items for run in item])
    assert (inks < 0.3).any() and (inks > 0.7).any()  # both polarities


@pytest.mark.parametrize("split,other", [("train", "held-out"), ("held-out", "train")])
def test_font_splits_never_mix(monkeypatch, split, other):
    assert not set(digits.FONTS["train"]) & set(digits.FONTS["held-out"])
    assert 4 <= len(digits.FONTS["held-out"]) <= 6
    spy = DrawSpy(monkeypatch)
    digits.patches(150, seed=9, fonts=split)
    digits.scene(9, size=(320, 240), fonts=split)
    used = {run["style"].font for item in spy.items for run in item}
    assert used <= set(digits.FONTS[split]) and not used & set(digits.FONTS[other])
    assert len(used) >= len(digits.FONTS[split]) - 1


def test_colour_patches_have_colour_and_gray_patches_do_not():
    x, _, _ = digits.patches(40, seed=2, channels=3)
    differ = [np.abs(p[0] - p[1]).max() > 0.05 or np.abs(p[1] - p[2]).max() > 0.05 for p in x]
    assert np.mean(differ) > 0.5
    g, _, _ = digits.patches(40, seed=2, channels=1)
    assert g.shape == (40, 1, 32, 32) and 0 <= g.min() and g.max() <= 1


@pytest.mark.parametrize("channels", [1, 3])
def test_ink_contrasts_with_its_background_in_both_polarities(monkeypatch, channels):
    spy = DrawSpy(monkeypatch, keep_canvas=True)
    digits.patches(150, seed=12, channels=channels)
    runs = [run for item in spy.items for run in item]
    luma = np.array([0.114, 0.587, 0.299])[:channels] if channels == 3 else np.ones(1)
    ink = np.array([run["ink"] @ luma for run in runs])
    behind = np.array([np.median(np.atleast_3d(run["before"]) @ luma) for run in runs])
    assert np.abs(ink - behind).min() >= 0.2
    assert 0.2 < np.mean(ink < behind) < 0.8  # dark on light and light on dark
    if channels == 3:  # coloured ink, not only gray
        chroma = np.array([run["ink"].max() - run["ink"].min() for run in runs])
        assert np.mean(chroma > 0.1) > 0.3


def test_glyph_aspect_is_the_mean_ink_aspect_of_the_training_fonts():
    """Against an independent rendering with Pillow alone."""
    from PIL import Image, ImageDraw, ImageFont
    for digit in (0, 1, 7):
        aspects = []
        for font in digits.FONTS["train"]:
            face = ImageFont.truetype(digits.font_path(font), 128)
            image = Image.new("L", (300, 300))
            ImageDraw.Draw(image).text((80, 220), str(digit), font=face, fill=255, anchor="ls")
            ys, xs = np.nonzero(np.asarray(image) >= 128)
            aspects.append((xs.max() + 1 - xs.min()) / (ys.max() + 1 - ys.min()))
        assert digits.glyph_aspect(digit) == pytest.approx(np.mean(aspects), abs=0.01)
    assert digits.glyph_aspect(1) < digits.glyph_aspect(0)


def test_preview_grid():
    for channels in (1, 3):
        x, labels, _ = digits.patches(20, seed=0, channels=channels)
        grid = digits.preview(x, labels)
        assert grid.dtype == np.uint8
        assert grid.shape[:2] == (2 * (96 + 14), 16 * 96) and grid.ndim == (2 if channels == 1 else 3)
        tile = grid[:96, 96:192].reshape(96, 96, channels)
        np.testing.assert_array_equal(tile[::3, ::3], (x[1].transpose(1, 2, 0) * 255).round().astype(np.uint8))
        assert (grid[96:110, :96] < 128).any()  # a caption


# --------------------------------------------------------------------------------------------
# scenes

def test_scene_boxes_match_the_drawn_ink_and_never_overlap(monkeypatch):
    spy = DrawSpy(monkeypatch, keep_canvas=True)
    for seed in (0, 1, 2):
        image, boxes, labels = digits.scene(seed, size=(400, 300), channels=1 if seed else 3)
        (item,) = spy.items[-1:]
        assert image.dtype == np.uint8 and image.shape[:2] == (300, 400) and image.ndim == (3 if seed == 0 else 2)
        assert boxes.dtype == np.float64 and boxes.shape == (len(labels), 4) and len(labels) >= 2
        assert [run["text"] for run in item] == list(labels)
        np.testing.assert_array_equal(boxes, [run["boxes"][0] for run in item])
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 400).all() and (boxes[:, 3] <= 300).all()
        heights = boxes[:, 3] - boxes[:, 1]
        assert heights.min() >= digits.SCENE_DIGIT_HEIGHT[0] - 1e-6
        margin = digits.SCENE_MARGIN * heights[:, None]
        grown = boxes + np.hstack([-margin, -margin, margin, margin])
        for i in range(len(boxes)):
            for j in range(len(boxes)):
                if i != j:  # grown boxes are disjoint from the other boxes
                    b, g = boxes[j], grown[i]
                    assert not (g[0] < b[2] and b[0] < g[2] and g[1] < b[3] and b[1] < g[3])
        for run in item:
            found = ink_box(run["before"], run["after"], run["ink"])
            assert found is not None
            assert np.abs(found - run["boxes"][0]).max() <= 0.06 * (run["boxes"][0][3] - run["boxes"][0][1]) + 1.5


def test_scene_defaults_and_determinism():
    a = digits.scene(11)
    b = digits.scene(11)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    h, w = a[0].shape
    assert 160 <= w <= 1280 and h == w * 3 // 4
    assert not np.array_equal(digits.scene(12, size=(w, h))[0], a[0])
    assert all(label in "0123456789" and len(label) == 1 for label in a[2])


# --------------------------------------------------------------------------------------------
# photographs

def test_photo_splits_are_disjoint_and_held_out_photos_never_train(monkeypatch):
    assert not set(photos.TRAIN) & set(photos.HELD_OUT)
    assert set(photos.TRAIN) | set(photos.HELD_OUT) == set(photos.PHOTOS)
    assert len(photos.HELD_OUT) >= 5
    loaded = []
    real = photos.load

    def spy(name, channels=3):
        loaded.append(name)
        return real(name, channels)

    monkeypatch.setattr(photos, "load", spy)
    digits.patches(200, seed=0, channels=3)
    for seed in range(4):
        digits.scene(seed, size=(200, 150))
    assert loaded and set(loaded) <= set(photos.TRAIN)
    loaded.clear()
    digits.patches(100, seed=0, photos="held-out")
    assert loaded and set(loaded) <= set(photos.HELD_OUT)


def test_photographs_load_cached_and_read_only():
    for name in photos.available()[:3] + ("grace_hopper",):
        gray, colour = photos.load(name, 1), photos.load(name, 3)
        assert gray.dtype == colour.dtype == np.uint8
        assert gray.ndim == 2 and colour.shape == gray.shape + (3,)
        assert not gray.flags.writeable and photos.load(name, 1) is gray
    with pytest.raises(ValueError):
        photos.load("page", 1)  # text: never a photograph here


def test_without_scikit_image_fewer_photos_and_a_clear_error(monkeypatch):
    real = photos._data_folder
    monkeypatch.setattr(photos, "_data_folder", lambda package: None if package == "skimage" else real(package))
    assert photos.available() == ("grace_hopper",)
    assert photos.photos("train") == ("grace_hopper",)
    with pytest.raises(RuntimeError, match="pip install scikit-image"):
        photos.photos("held-out")
    x, _, _ = digits.patches(20, seed=0)
    assert x.shape == (20, 1, 32, 32)


def test_photo_files_exist_where_their_package_is_installed():
    for name in photos.PHOTOS:
        path = photos.path(name)
        assert path is None or os.path.exists(path) == (name in photos.available())
    assert "grace_hopper" in photos.available()


# --------------------------------------------------------------------------------------------
# reproducibility

def test_fingerprint_is_stable_and_follows_the_data():
    a = digits.fingerprint(n=50, seed=0)
    assert a == digits.fingerprint(n=50, seed=0)
    assert a != digits.fingerprint(n=50, seed=1)
    assert a != digits.fingerprint(n=51, seed=0)
    x, labels, boxes = digits.patches(50, 0)
    image, sboxes, slabels = digits.scene(0)
    digest = hashlib.sha256()
    for array in (x, labels, boxes, image, sboxes, slabels):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    assert a == digest.hexdigest()


def test_render_versions_name_the_libraries():
    versions = digits.render_versions()
    assert {"pillow", "freetype2", "matplotlib", "opencv", "numpy"} <= set(versions)
    assert all(isinstance(v, str) and v for v in versions.values())
