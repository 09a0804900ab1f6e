"""The shipped default model loads and classifies fresh patches."""
import detector
from detector import data
from detector.train import accuracy

UNSEEN_SEED = 424242


def test_default_model_scores_98_percent_on_unseen_patches():
    net = detector.load_model()
    assert UNSEEN_SEED not in net.metrics["data_seeds"].values()
    x, labels = data.patches(3000, UNSEEN_SEED)
    overall, per_class = accuracy(net, x, labels)
    assert overall >= 0.98, per_class
    assert min(per_class.values()) >= 0.9, per_class


def test_default_model_header_describes_it():
    net = detector.load_model()
    assert net.classes == list(data.CLASSES)
    assert net.window == (32, 32) and net.total_stride == (4, 4)
    assert net.metrics["val_accuracy"] >= 0.98
    assert detector.DEFAULT_MODEL.stat().st_size < 2 * 1024 * 1024
