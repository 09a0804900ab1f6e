"""The shipped default model loads, describes itself, and classifies fresh patches."""
import numpy as np
import pytest

import detector
from detector.datasets import digits
from detector.train import accuracy

UNSEEN_SEED = 424242


@pytest.fixture(scope="module")
def net():
    return detector.load_model()


def test_default_model_scores_97_percent_on_unseen_patches(net):
    assert UNSEEN_SEED not in net.metrics["data_seeds"].values()
    x, labels, _ = digits.patches(3000, UNSEEN_SEED, channels=net.channels)
    overall, per_class = accuracy(net, x, labels)
    assert overall >= 0.97, per_class
    assert min(per_class.values()) >= 0.9, per_class


def test_default_model_header_describes_it(net):
    assert net.classes == list(digits.CLASSES) and net.background == "background"
    assert net.window == (32, 32) and net.total_stride == (4, 4) and net.box_regression
    assert net.object_size == pytest.approx(np.sqrt(np.prod(digits.DIGIT_HEIGHT)))
    # digits are taller than wide, "1" the narrowest
    assert all(0.4 < a < 0.95 for a in net.box_aspects.values())
    assert net.box_aspects["1"] == min(net.box_aspects.values())
    assert net.metrics["val_accuracy"] >= 0.97 and net.data["source"] == "digits"
    assert detector.DEFAULT_MODEL.stat().st_size < 2 * 1024 * 1024


def test_this_machine_draws_the_data_the_shipped_model_was_trained_on(net):
    """Retraining gives the shipped model bit for bit only if the generator still draws the
    same patches; the header keeps the libraries' versions and a fingerprint to say so."""
    recorded, now = net.data["render"], digits.render_versions()
    if recorded != now:
        pytest.skip(f"this machine renders with {now}, the shipped model was trained with {recorded}: "
                    "a retrain may differ")
    assert net.data["fingerprint"] == digits.fingerprint()
