"""The inference path: layers fused as planned, equal to the training layers within
rounding, and identical bits for any number of threads."""
import numpy as np
import pytest

import detector
from detector import layers as L
from detector.architecture import Conv, Pool, Relu, infer, inference_steps, parse_spec
from detector.model import Net

CLASSES = ["bg", "a", "b", "c"]


def run_inference_kernels(seed=0):
    """Every inference kernel on shapes cut into several chunks (and the 2x2 fast path)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 6, 41, 260)).astype(np.float32)
    w = rng.standard_normal((8, 6, 5, 5)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    big = rng.standard_normal((1, 16, 90, 54)).astype(np.float32)  # blocks by the cache budget
    w_big = rng.standard_normal((64, 16, 5, 5)).astype(np.float32)
    b_big = rng.standard_normal(64).astype(np.float32)
    results = [L.conv2d_infer(x, w, b, padding=(2, 1), relu=relu, pool=pool, algorithm="im2col")
               for relu in (False, True) for pool in (None, 2, (3, 2))]
    results += [L.conv2d_infer(big, w_big, b_big, relu=True, pool=pool, algorithm=algorithm)
                for pool in (None, 2) for algorithm in ("im2col", "winograd")]
    results += [L.conv2d_infer(x, w, b, padding=(2, 1), relu=True, pool=pool, algorithm="winograd")
                for pool in (None, 2)]
    results += [L.max_pool2d_infer(x, size, stride=stride, padding=padding)
                for size, stride, padding in [(2, 2, 0), (3, 2, 1), ((2, 3), 1, 0)]]
    return results


def test_inference_kernels_give_identical_bits_for_any_thread_count(same_bits_for_any_thread_count):
    same_bits_for_any_thread_count(run_inference_kernels)


def test_fully_convolutional_pass_gives_identical_bits_for_any_thread_count(same_bits_for_any_thread_count):
    net = detector.load_model()
    fcn = net.to_fcn()
    x = net.normalise(np.random.default_rng(1).random((1, 1, 157, 203), dtype=np.float32))
    same_bits_for_any_thread_count(lambda: [fcn.scores(x)], counts=(2, 5))


@pytest.mark.parametrize("spec, fused", [
    ("conv4@3x3 relu maxpool2 fc4", [("conv1", {"relu": True, "pool": 2}), ("fc1", {})]),
    ("conv4@3x3 maxpool2 relu fc4", [("conv1", {"pool": 2, "relu": True}), ("fc1", {})]),
    # an overlapping or padded pool, and a pool that is not a max, stay layers of their own
    ("conv4@3x3 relu maxpool3/2 fc4", [("conv1", {"relu": True}), ("pool1", {}), ("fc1", {})]),
    ("conv4@3x3 relu maxpool2+1 fc4", [("conv1", {"relu": True}), ("pool1", {}), ("fc1", {})]),
    ("conv4@3x3 relu avgpool2 fc4", [("conv1", {"relu": True}), ("pool1", {}), ("fc1", {})]),
    # one ReLU and one pool per convolution; a ReLU after an fc stays a layer
    ("conv4@3x3 relu relu maxpool2 maxpool2 fc4 relu fc4",
     [("conv1", {"relu": True}), ("relu2", {}), ("pool1", {}), ("pool2", {}), ("fc1", {}),
      ("relu3", {}), ("fc2", {})]),
])
def test_convolutions_take_in_the_relu_and_the_tiling_max_pool_after_them(spec, fused):
    steps = inference_steps(parse_spec(spec))
    assert [(layer.name, options) for layer, options in steps] == fused


@pytest.mark.parametrize("tail, fused", [
    # the FCN's fc1, fc2: the 1x1 convolution is projected in fc1's output stage
    ([Relu("relu3"), Conv(15, (1, 1), name="fc2")], [("fc1", {"relu": True, "project": "fc2"})]),
    ([Conv(15, (1, 1), name="fc2")], [("fc1", {"project": "fc2"})]),
    # ...unless a ReLU or a pool follows it, or it is not a plain 1x1 convolution
    ([Relu("relu3"), Conv(15, (1, 1), name="fc2"), Relu("relu4")],
     [("fc1", {"relu": True}), ("fc2", {"relu": True})]),
    ([Conv(15, (1, 1), stride=2, name="fc2")], [("fc1", {}), ("fc2", {})]),
    ([Conv(15, (1, 1), padding=1, name="fc2")], [("fc1", {}), ("fc2", {})]),
    ([Conv(15, (3, 3), name="fc2")], [("fc1", {}), ("fc2", {})]),
])
def test_a_convolution_takes_in_the_1x1_convolution_after_it(tail, fused):
    steps = inference_steps([Conv(8, (5, 5), name="fc1"), *tail])
    assert [(layer.name, {k: getattr(v, "name", v) for k, v in options.items()}) for layer, options in steps] == fused


def test_only_a_convolution_the_winograd_kernel_runs_takes_in_a_projection():
    # the other kernels would store its channels anyway, which the FCN's tiles do not count
    for first in (Conv(8, (7, 7), name="fc1"), Conv(8, (5, 5), stride=2, name="fc1")):
        steps = inference_steps([first, Conv(15, (1, 1), name="fc2")])
        assert [(layer.name, options) for layer, options in steps] == [("fc1", {}), ("fc2", {})]


def test_a_pool_tiles_its_input_only_as_an_unpadded_max_of_stride_size():
    assert Pool("max", 2, 2).tiles and Pool("max", 3, 3).tiles
    assert not Pool("max", 3, 2).tiles and not Pool("max", 2, 2, padding=1).tiles
    assert not Pool("avg", 2, 2).tiles and not Pool("l2", 2, 2).tiles


ARCHITECTURES = [
    ("conv4@5x5 relu maxpool2 conv6@3x3 relu maxpool2 fc16 relu fc4", (1, 24, 24)),
    ("conv3@3x3/2 relu avgpool2 fc4", (1, 17, 17)),
    ("conv4@3x3+1 maxpool3/2+1 relu conv5@1x1 relu l2pool2 fc8 relu fc4", (3, 21, 19)),
    ("conv2@4x2 maxpool2 relu conv3@2x2 relu maxpool2/3 fc4", (1, 16, 13)),
]


@pytest.mark.parametrize("spec, shape", ARCHITECTURES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inference_equals_the_training_forward_of_a_net(spec, shape, dtype):
    net = Net(spec, shape, CLASSES, seed=3, dtype=dtype)
    x = np.random.default_rng(4).standard_normal((5, *shape)).astype(dtype)
    out = infer(net.layers, net.params, x)
    expected = x
    for layer in net.layers:
        expected, _ = layer.forward(expected, net.params_of(layer))
    assert out.dtype == dtype and out.shape == (5, len(CLASSES))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


def test_layer_infer_gives_the_forward_output_alone():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 9, 9))
    conv = Conv(4, (3, 3), name="conv1")
    params = {"w": rng.standard_normal((4, 3, 3, 3)), "b": rng.standard_normal(4)}
    np.testing.assert_allclose(conv.infer(x, params), conv.forward(x, params)[0], rtol=1e-12)
    for layer in (Pool("max", 3, 2, 1), Pool("avg", 2, 2), Relu()):
        np.testing.assert_array_equal(layer.infer(x, {}), layer.forward(x, {})[0])
