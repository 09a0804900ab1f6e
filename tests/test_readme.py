"""The README's example runs as written."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def examples():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2, "README.md lost its python examples"
    return blocks


def run(block):
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    return namespace


def test_readme_layer_example_runs():
    namespace = run(examples()[0])
    assert namespace["out"].shape == (8, 16, 28, 28)
    assert namespace["dx"].shape == namespace["x"].shape
    assert np.isfinite(namespace["loss"])
    assert namespace["w_conv"].shape == (11, 16, 14, 14)


def test_readme_model_example_runs():
    namespace = run(examples()[1])
    assert namespace["probs"].shape == (8, 11)
    assert (namespace["probs"].argmax(axis=1) == namespace["labels"]).mean() >= 0.75


def test_readme_detection_example_runs():
    namespace = run(examples()[2])
    assert namespace["result"].detections and namespace["level"].scores.shape[0] == 11


def test_readme_export_example_runs():
    import pytest

    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    namespace = run(examples()[3])
    assert namespace["scores"].shape == (1, 11, 31, 41) and namespace["boxes"].shape == (1, 4, 31, 41)
    np.testing.assert_allclose(namespace["scores"].sum(axis=1), 1, rtol=1e-5)
    assert namespace["facts"]["stride"] == 4 and namespace["facts"]["classes"][0] == "background"
