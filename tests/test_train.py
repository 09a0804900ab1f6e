"""A short real training run learns; runs are reproducible; Ctrl-C keeps the best model."""
import numpy as np
import pytest

from detector import checkpoint, layers
from detector.train import TrainConfig, train


def small_config(tmp_path, **kw):
    return TrainConfig(out=str(tmp_path / "m.npz"), epochs=5, train_size=2000, val_size=300,
                       warmup_steps=60, progress=False, **kw)


def test_short_training_learns(tmp_path):
    net, summary = train(small_config(tmp_path), log=lambda *_: None)
    history = summary["history"]
    assert len(history) == 5
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    # chance is 1/11, and always answering "background" scores 0.5
    assert summary["val_accuracy"] > 0.8
    digits = [summary["per_class_accuracy"][str(d)] for d in range(10)]
    assert np.mean(digits) > 0.6
    saved = checkpoint.load(str(tmp_path / "m.npz"))
    assert saved.metrics["val_accuracy"] == summary["val_accuracy"]


def test_same_seed_same_model(tmp_path):
    a, _ = train(small_config(tmp_path, seed=4), log=lambda *_: None)
    b, _ = train(small_config(tmp_path, seed=4), log=lambda *_: None)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


def test_interrupt_keeps_the_best_model(tmp_path, monkeypatch):
    real, calls = layers.softmax_cross_entropy, []

    def interrupt_in_epoch_two(scores, labels):
        calls.append(1)
        if len(calls) == 40:  # 2000 / 64 = 32 steps per epoch
            raise KeyboardInterrupt
        return real(scores, labels)

    monkeypatch.setattr(layers, "softmax_cross_entropy", interrupt_in_epoch_two)
    net, summary = train(small_config(tmp_path), log=lambda *_: None)
    assert summary["interrupted"]
    assert checkpoint.load(str(tmp_path / "m.npz")).metrics["val_accuracy"] == summary["val_accuracy"]


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "epochs must be at least 1"),
    ("lr", -1.0, "lr must be positive"),
    ("momentum", 1.0, r"momentum must lie in \[0, 1\)"),
])
def test_bad_settings_are_refused(tmp_path, field, value, message):
    config = small_config(tmp_path)
    setattr(config, field, value)
    with pytest.raises(ValueError, match=message):
        train(config, log=lambda *_: None)


def test_mining_takes_only_detections_off_the_ground_truth():
    import detector
    from detector.datasets import digits
    from detector.detect import detect
    from detector.nms import iou
    from detector.train import false_positives, mine_negatives

    net = detector.load_model()
    image, boxes, _ = digits.scene(71, size=(480, 360))
    everything = detect(image, net, max_detections=None, score_threshold=0.05).detections
    mined = false_positives(net, image, boxes, score_threshold=0.05)
    on_digits = [d for d in everything if iou(np.array(d.box), boxes).max() >= 0.5]
    assert mined and on_digits, "the scene must give both kinds of detection"
    assert all(iou(np.array(d.box), boxes).max() < 0.5 for d in mined)
    assert len(mined) + len(on_digits) == len(everything)
    patches = mine_negatives(net, [(image, boxes)], score_threshold=0.05)
    assert patches.shape == (len(mined), 1, 32, 32) and patches.dtype == np.float32
    assert 0 <= patches.min() and patches.max() <= 1
    # each window holds its false detection as a positive window holds an object (the box
    # centred, its longer side the model's object size): the net still half-sees an object
    # there, far more than in random windows of the same scene
    from detector.datasets.windows import random_windows

    fired = 1 - net.predict(patches)[:, 0]
    anywhere = 1 - net.predict(random_windows(image, net.window, np.random.default_rng(0), 200))[:, 0]
    assert np.median(fired) > 20 * np.median(anywhere)


def test_mining_round_adds_background_and_records_it(tmp_path, monkeypatch):
    from detector.datasets import sources

    monkeypatch.setattr(sources, "MINING_PHOTO_SIDES", (320,))  # one size of each photograph is enough here
    config = small_config(tmp_path, mine_rounds=1, mine_scenes=3, mine_epochs=1)
    net, summary = train(config, log=lambda *_: None)
    assert summary["mined_negatives"] > 0
    assert len(summary["history"]) == config.epochs + 1
    assert checkpoint.load(str(tmp_path / "m.npz")).metrics["mined_negatives"] == summary["mined_negatives"]
