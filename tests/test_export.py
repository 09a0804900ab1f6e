"""ONNX export: the graph in ONNX Runtime and in OpenCV's cv2.dnn gives detect's maps and the
classifier's probabilities; its metadata; the command line."""
import json
import sys

import cv2
import numpy as np
import pytest

import detector
from detector.cli import main
from detector.detect import _level_input, detect, fcn_scores
from detector.model import Net

onnx = pytest.importorskip("onnx")
from detector.export import onnx_model  # noqa: E402
from detector.report_json import model_json  # noqa: E402

TOLERANCE = 1e-4


def colour_net():
    """A 3-channel net with its own normalisation and a box head, untrained."""
    return Net("conv6@5x5 relu maxpool2 conv8@3x3 relu maxpool2 fc16 relu fc4", (3, 28, 28),
               ["bg", "a", "b", "c"], seed=4, box_regression=True,
               normalisation={"mean": [0.2, 0.5, 0.7], "std": [0.3, 0.2, 0.25]})


def runtimes(model):
    """{name: run(x) -> [scores, boxes...]} for ONNX Runtime (when installed) and cv2.dnn."""
    found = {}
    blob = model.SerializeToString()
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        found["onnxruntime"] = lambda x: session.run(None, {"image": x})
    except ImportError:
        pass
    dnn = cv2.dnn.readNetFromONNX(np.frombuffer(blob, np.uint8))
    names = [o.name for o in model.graph.output]

    def opencv(x):
        dnn.setInput(x, "image")
        return dnn.forward(names)
    found["opencv"] = opencv
    return found


def as_input(image, channels):
    x = image.astype(np.float32) / 255
    return (x[None, None] if channels == 1 else x.transpose(2, 0, 1)[None]).copy()


@pytest.mark.parametrize("make, shape", [(detector.load_model, (75, 98)), (colour_net, (61, 47, 3))])
def test_the_graph_gives_detects_maps_in_both_runtimes(make, shape):
    net = make()
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    stride = net.total_stride[0]
    result = detect(image, net, scales=[1.0], stride=stride, return_maps=True)
    expected = result.levels[0].scores
    pad = min(net.window) // 2
    x = _level_input(np.asarray(image, np.float32) / 255, net, 1.0, shape[1::-1], pad)
    raw = fcn_scores(net.to_fcn(), x, stride, None, None)
    model = onnx_model(net)
    for name, run in runtimes(model).items():
        outputs = run(as_input(image, net.channels))
        assert outputs[0].shape == (1, *expected.shape), name
        assert np.abs(outputs[0][0] - expected).max() < TOLERANCE, name
        if net.box_regression:
            assert np.abs(outputs[1][0] - raw[len(net.classes):]).max() < TOLERANCE, name


def test_the_classifier_graph_gives_predict():
    net = colour_net()
    x = np.random.default_rng(2).random((7, 3, 28, 28), dtype=np.float32)
    probs, boxes = net.predict_boxes(x)
    for name, run in runtimes(onnx_model(net, classifier=True)).items():
        scores, offsets = run(x)[:2]
        assert np.abs(scores - probs).max() < TOLERANCE, name
        assert np.abs(offsets - boxes).max() < TOLERANCE, name


def test_the_metadata_describes_the_model(tmp_path):
    path = tmp_path / "digits.onnx"
    assert main(["export", "--onnx", str(path)]) == 0
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    facts = {p.key: json.loads(p.value) for p in model.metadata_props}
    net = detector.load_model()
    assert facts["classes"] == net.classes and facts["background"] == net.background
    assert facts["window"] == list(net.window) and facts["stride"] == 4
    assert facts["pad"] == 16 and facts["channels"] == 1
    assert facts["box_aspects"] == pytest.approx(net.box_aspects)
    assert facts["object_size"] == pytest.approx(net.object_size)
    assert facts["source_sha256"] == model_json(str(detector.DEFAULT_MODEL))["checksum"]
    assert facts["kind"] == "fully_convolutional"
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 1, "H", "W"]


def test_a_net_whose_pools_leave_rows_over_is_refused_with_the_way_out():
    net = Net("conv4@3x3 relu maxpool2 conv4@3x3 relu maxpool2 fc8 relu fc3", (1, 24, 24), ["bg", "a", "b"], seed=0)
    with pytest.raises(ValueError, match="pools leave rows over.*export it with --classifier"):
        onnx_model(net)
    assert onnx_model(net, classifier=True).graph.name == "detector_classifier"


def export_fails(args, capsys):
    """The one line a failing export prints, after checking it exits with status 2."""
    with pytest.raises(SystemExit) as exit_:
        main(["export", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_export_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert "its folder does not exist" in export_fails(["--onnx", str(tmp_path / "missing" / "m.onnx")], capsys)
    assert "no checkpoint at" in export_fails(["--onnx", str(tmp_path / "m.onnx"), "--model", str(tmp_path / "none.npz")],
                                             capsys)
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert "pip install 'detector[onnx]'" in export_fails(["--onnx", str(tmp_path / "m.onnx")], capsys)
    assert not (tmp_path / "m.onnx").exists()


def test_a_padded_net_is_refused_with_the_way_out_and_its_classifier_exports_quietly(recwarn):
    net = Net("conv4@3x3+1 relu maxpool2 fc3", (1, 12, 12), ["bg", "a", "b"], seed=0)
    with pytest.raises(ValueError, match="conv1 pads by 1.*; export it with --classifier$"):
        onnx_model(net)
    model = onnx_model(net, classifier=True)
    assert not recwarn.list
    x = np.random.default_rng(3).random((4, 1, 12, 12), dtype=np.float32)
    for name, run in runtimes(model).items():
        assert np.abs(run(x)[0] - net.predict(x)).max() < TOLERANCE, name


def test_a_window_wider_than_tall_exports_and_gives_detects_maps():
    net = Net("conv4@3x3 relu maxpool2 fc3", (1, 16, 24), ["bg", "a", "b"], seed=1)
    image = np.random.default_rng(4).integers(0, 256, (41, 57), dtype=np.uint8)
    expected = detect(image, net, scales=[1.0], stride=net.total_stride[0], return_maps=True).levels[0].scores
    for name, run in runtimes(onnx_model(net)).items():
        assert np.abs(run(as_input(image, 1))[0][0] - expected).max() < TOLERANCE, name
