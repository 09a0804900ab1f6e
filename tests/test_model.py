"""Net: whole-net gradients, geometry, spec parsing and predict."""
import numpy as np
import pytest

import reference as ref
from detector import layers as L
from detector.model import DEFAULT_SPEC, Net

CLASSES = ["bg", "a", "b"]
GRADIENT_SPECS = [
    ("conv3@3x3 relu maxpool2 fc5 relu fc3", (1, 8, 8)),
    ("conv2@3x3/2+1 relu l2pool2 conv3@2x2 relu fc3", (2, 9, 9)),
    ("conv4@5x3 relu avgpool3/2+1 fc4 relu fc3", (1, 7, 9)),
]


@pytest.mark.parametrize("spec, shape", GRADIENT_SPECS)
def test_whole_net_backward_matches_numerical_gradient(spec, shape):
    net = Net(spec, shape, CLASSES, seed=1, dtype=np.float64)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, *shape))
    labels = np.array([0, 1, 2])

    def loss():
        return L.softmax_cross_entropy(net.forward(x), labels)[0]

    _, dscores = L.softmax_cross_entropy(net.forward(x, train=True), labels)
    grads = net.backward(dscores)
    assert set(grads) == set(net.params)
    for name, param in net.params.items():
        assert ref.relative_error(grads[name], ref.numerical_gradient(loss, param)) < 1e-6, name


def test_default_geometry():
    net = Net(DEFAULT_SPEC)
    assert net.window == (32, 32)
    assert net.total_stride == (4, 4)
    assert net.receptive_field == (32, 32)
    assert net.shapes[-1] == (11,)
    assert sum(p.size for p in net.params.values()) == 416 + 12832 + 102528 + 1419


def test_geometry_of_strided_and_padded_layers():
    net = Net("conv4@3x3/2+1 relu maxpool2 fc3", (1, 16, 16), CLASSES)
    # 16 -> conv(3, s2, p1) 8 -> pool2 4; stride 2 * 2; field 3 + (2-1)*2 = 5, then fc sees 4 more cells * 4
    assert net.total_stride == (4, 4)
    assert net.receptive_field == (16, 16)
    small = Net("conv4@3x3 relu conv4@3x3 relu fc3", (1, 5, 5), CLASSES)
    assert small.total_stride == (1, 1) and small.receptive_field == (5, 5)


def test_initialisation_is_seeded():
    a, b, c = Net(seed=3), Net(seed=3), Net(seed=4)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["conv1.w"], c.params["conv1.w"])
    assert not a.params["fc2.b"].any()


@pytest.mark.parametrize("spec, message", [
    ("conv16@5x5 relu banana fc11", "cannot read layer 'banana'"),
    ("conv16@5x5 relu maxpool2 fc10", "must end in fc11"),
    ("fc20 relu conv4@3x3 fc11", "conv1 follows a fully-connected layer"),
    ("conv16@33x33 fc11", r"output height after conv1 would be 0.*N=32, F=33, P=0, S=1"),
    ("conv0@3x3 fc11", "at least 1"),
    ("", "non-empty"),
])
def test_bad_specs_are_explained(spec, message):
    with pytest.raises(ValueError, match=message):
        Net(spec)


def test_predict_gives_probabilities_and_checks_its_input():
    net = Net(seed=0)
    x = np.random.default_rng(0).random((5, 1, 32, 32), dtype=np.float32)
    probs = net.predict(x)
    assert probs.shape == (5, 11)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    u8 = (x * 255).round().astype(np.uint8)
    np.testing.assert_allclose(net.predict(u8), net.predict(u8 / np.float32(255)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"patches must have shape \(N, 1, 32, 32\)"):
        net.predict(x[:, :, :16])
    with pytest.raises(TypeError, match="dtype"):
        net.predict(np.zeros((1, 1, 32, 32), object))
    with pytest.raises(RuntimeError, match="forward"):
        net.backward(np.zeros((1, 11), np.float32))


def test_box_head_rides_on_the_last_layer_and_has_exact_gradients():
    net = Net("conv3@3x3 relu maxpool2 fc5 relu fc3", (3, 8, 8), CLASSES, seed=1, dtype=np.float64,
              box_regression=True)
    assert net.outputs == 7 and net.params["fc2.w"].shape == (7, 5)
    rng = np.random.default_rng(3)
    x, labels, targets = rng.random((4, 3, 8, 8)), np.array([0, 1, 2, 1]), rng.standard_normal((4, 4))

    def loss():
        out = net.forward(x)
        return L.softmax_cross_entropy(out[:, :3], labels)[0] + 0.5 * np.sum((out[:, 3:] - targets) ** 2)

    out = net.forward(x, train=True)
    _, dscores = L.softmax_cross_entropy(out[:, :3], labels)
    grads = net.backward(np.concatenate([dscores, out[:, 3:] - targets], axis=1))
    for name, param in net.params.items():
        assert ref.relative_error(grads[name], ref.numerical_gradient(loss, param)) < 1e-6, name
    probs, offsets = net.predict_boxes(x)
    assert probs.shape == (4, 3) and offsets.shape == (4, 4)
    np.testing.assert_allclose(probs, net.predict(x))
    np.testing.assert_allclose(offsets, net.forward(net.normalise(x))[:, 3:])


def test_priors_are_the_models_own():
    net = Net("conv3@3x3 relu fc3", (3, 6, 6), ["cat", "none", "dog"], background="none", object_size=0.5,
              box_aspects={"cat": 1.5}, normalisation={"mean": [0.1, 0.2, 0.3], "std": 0.5})
    assert net.objects == ["cat", "dog"] and net.background_index == 1 and net.channels == 3
    assert net.box_aspects == {"cat": 1.5, "dog": 1.0} and net.object_pixels == 3.0
    x = np.random.default_rng(0).random((2, 3, 6, 6), dtype=np.float32)
    expected = (x - np.array([0.1, 0.2, 0.3], np.float32)[:, None, None]) / np.float32(0.5)
    np.testing.assert_allclose(net.normalise(x), expected, rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(spec="fc9999999 fc2", classes=["a", "b"]), "parameters .* more than the 50,000,000"),
    (dict(spec="fc99999999 fc2", classes=["a", "b"]), "activations per window .* more than the 20,000,000"),
    (dict(spec="conv3@3x3 fc3", classes=CLASSES, background="cat"), "background class 'cat'"),
    (dict(spec="conv3@3x3 fc3", classes=CLASSES, input_shape=(0, 8, 8)), "at least 1"),
    (dict(spec="conv3@3x3 fc3", classes=CLASSES, normalisation={"mean": [0.1, 0.2], "std": 1}), "mean"),
    (dict(spec="conv3@3x3 fc3", classes=CLASSES, normalisation={"mean": 0.5, "std": 0}), "std"),
    (dict(spec="conv3@3x3 fc3", classes=CLASSES, object_size=1.5), "object_size"),
    (dict(spec="conv3@3x3 fc3", classes=CLASSES, box_aspects={"zebra": 1.0}), "zebra"),
    (dict(spec="conv3@3x3 fc2", classes=["a", "a"]), "distinct"),
])
def test_bad_priors_are_explained(kwargs, message):
    kwargs.setdefault("input_shape", (1, 8, 8))
    with pytest.raises(ValueError, match=message):
        Net(**kwargs)


def test_training_runs_a_relu_after_the_tiling_max_pool_it_commutes_with():
    from detector.architecture import parse_spec, training_order

    names = [layer.name for layer in training_order(parse_spec("conv4@3x3 relu maxpool2 conv4@3x3 relu maxpool3/2 fc3"))]
    # the overlapping pool (3/2) keeps its place: only tiling max-pools are moved
    assert names == ["conv1", "pool1", "relu1", "conv2", "relu2", "pool2", "fc1"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_training_order_gives_the_gradients_of_the_spec_order(dtype):
    net = Net("conv4@3x3 relu maxpool2 fc5 relu fc3", (1, 10, 10), CLASSES, seed=3, dtype=dtype)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 1, 10, 10)).astype(dtype)
    x[0, 0, :4, :4] = -5  # windows whose max is negative: no gradient either way
    labels = np.array([0, 1, 2, 0, 1, 2])
    _, dscores = L.softmax_cross_entropy(net.forward(x, train=True), labels)
    grads = net.backward(dscores)
    # the same net run layer by layer in the spec's order
    caches, h = [], x
    for layer in net.layers:
        h, cache = layer.forward(h, net.params_of(layer))
        caches.append(cache)
    _, d = L.softmax_cross_entropy(h, labels)
    expected = {}
    for layer, cache in zip(reversed(net.layers), reversed(caches)):
        d, own = layer.backward(d, cache)
        expected.update({f"{layer.name}.{k}": v for k, v in own.items()})
    for name in net.params:
        np.testing.assert_array_equal(grads[name], expected[name], err_msg=name)
