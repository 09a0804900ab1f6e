"""The fully convolutional net equals sliding windows at its stride, position by position."""
import numpy as np
import pytest

import detector
from detector import layers as L
from detector.bench.detect import layer_flops
from detector.detect import fcn_scores, sliding_scores
from detector.model import Net

CLASSES = ["bg", "a", "b", "c"]
ARCHITECTURES = [
    ("conv4@5x5 relu maxpool2 conv6@3x3 relu maxpool2 fc16 relu fc4", (1, 24, 24)),
    ("conv3@3x3/2 relu avgpool2 fc4", (1, 17, 17)),                  # a strided conv, pools leave rows over
    ("conv4@3x3 relu l2pool3/2 conv5@1x1 relu maxpool2 fc4", (1, 20, 20)),
    ("conv2@4x2 relu maxpool2/3 fc8 relu fc6 relu fc4", (1, 16, 13)),  # rectangular; stride above size
    # the pool before the ReLU (both fused), and an overlapping max-pool (not fused)
    ("conv3@3x3 maxpool2 relu conv4@2x2 relu maxpool3/2 fc6 relu fc4", (1, 22, 19)),
]


def image(h, w, seed=0):
    return np.random.default_rng(seed).standard_normal((1, 1, h, w)).astype(np.float32)


def sizes_for(window, stride):
    """Exactly the window, sizes that do not divide the stride, and a larger odd size."""
    wh, ww = window
    return [(wh, ww), (wh + stride - 1, ww + 1), (wh + 2 * stride + 1, ww + 3 * stride - 1), (wh + 37, ww + 29)]


@pytest.mark.parametrize("spec, shape", ARCHITECTURES)
def test_random_nets_match_sliding_windows(spec, shape):
    net = Net(spec, shape, CLASSES, seed=7)
    fcn = net.to_fcn()
    stride = net.total_stride[0]
    for h, w in sizes_for(net.window, stride):
        x = image(h, w)
        dense = fcn.scores(x)[0]
        assert dense.shape[1:] == ((h - net.window[0]) // stride + 1, (w - net.window[1]) // stride + 1)
        np.testing.assert_allclose(dense, sliding_scores(net, x, stride, None), atol=1e-4, rtol=0)
        for tile_rows in (1, 2, 3):
            np.testing.assert_allclose(fcn.scores(x, tile_rows)[0], dense, atol=1e-4, rtol=0)


def test_default_model_matches_sliding_windows_through_tiles():
    net = detector.load_model()
    fcn = net.to_fcn()
    for h, w in [(32, 32), (35, 33), (77, 101), (150, 43)]:
        x = net.normalise(np.random.default_rng(h).random((1, 1, h, w), dtype=np.float32))
        sliding = sliding_scores(net, x, 4, None)
        for tile_rows in (None, 1, 4):
            np.testing.assert_allclose(fcn.scores(x, tile_rows)[0], sliding, atol=1e-4, rtol=0)


@pytest.mark.parametrize("stride", [1, 2])
def test_shift_and_stitch_matches_sliding_at_the_finer_stride(stride):
    net = detector.load_model()
    fcn = net.to_fcn()
    x = net.normalise(np.random.default_rng(3).random((1, 1, 45, 51), dtype=np.float32))
    stitched = fcn_scores(fcn, x, stride, None, None)
    assert stitched.shape[1:] == ((45 - 32) // stride + 1, (51 - 32) // stride + 1)
    np.testing.assert_allclose(stitched, sliding_scores(net, x, stride, None), atol=1e-4, rtol=0)


def test_default_model_runs_fused_on_the_inference_kernels_alone(monkeypatch):
    """No training kernel (and so no cache, argmax or separate ReLU pass) in the FCN pass."""
    net = detector.load_model()
    fcn = net.to_fcn()
    x = net.normalise(np.random.default_rng(5).random((1, 1, 67, 45), dtype=np.float32))
    expected = sliding_scores(net, x, 4, None)

    def refuse(*args, **kwargs):
        raise AssertionError("a training kernel ran in the inference pass")

    for name in ("conv2d_forward", "max_pool2d_forward", "relu_forward", "linear_forward"):
        monkeypatch.setattr(L, name, refuse)
    np.testing.assert_allclose(fcn.scores(x)[0], expected, atol=1e-4, rtol=0)


def test_padded_net_is_refused_or_run_with_a_warning():
    net = Net("conv4@3x3+1 relu maxpool2 fc4", (1, 8, 8), CLASSES, seed=0)
    with pytest.raises(ValueError, match="conv1 pads by 1"):
        net.to_fcn()
    with pytest.warns(UserWarning, match="conv1 pads by 1.*differ from sliding windows"):
        fcn = net.to_fcn(strict=False)
    assert not fcn.exact
    x = image(20, 20)
    # the warning is true: the scores do differ
    dense, sliding = fcn.scores(x)[0], sliding_scores(net, x, 2, None)
    assert dense.shape == sliding.shape and not np.allclose(dense, sliding, atol=1e-4)


def test_fc_layers_become_convolutions_with_the_same_flops_on_one_window():
    net = detector.load_model()
    fcn = net.to_fcn()
    assert [type(layer).__name__ for layer in fcn.layers][-3:] == ["Conv", "Relu", "Conv"]
    outputs = net.outputs  # 11 class scores, and 4 box offsets with a regression head
    assert fcn.params["fc1.w"].shape == (128, 32, 5, 5) and fcn.params["fc2.w"].shape == (outputs, 128, 1, 1)
    assert fcn.window == net.window and fcn.total_stride == net.total_stride and fcn.outputs == outputs
    one_window = 2 * (16 * 28 * 28 * 25 + 32 * 10 * 10 * 400 + 128 * 800 + outputs * 128)
    assert layer_flops(net.layers, (1, 32, 32)) == one_window
    assert layer_flops(fcn.layers, (1, 32, 32)) == one_window


def test_image_smaller_than_the_window_names_both_sizes():
    with pytest.raises(ValueError, match="the image is 20x40 .* window is 32x32"):
        detector.load_model().to_fcn().scores(image(20, 40))


def test_to_fcn_is_kept_while_the_parameters_stay_and_made_again_when_they_change():
    net = Net("conv4@3x3 relu maxpool2 fc3", (1, 12, 12), ["bg", "a", "b"], seed=5)
    x = np.random.default_rng(6).random((1, 1, 20, 20), dtype=np.float32)
    first = net.to_fcn()
    assert net.to_fcn() is first
    before = first.scores(x)
    net.params["conv1.w"] *= 2  # in place, as an optimiser step does
    again = net.to_fcn()
    assert again is not first
    assert not np.array_equal(again.scores(x), before)
    np.testing.assert_array_equal(first.scores(x), before)  # the old FCN kept its snapshot
