"""The layering the design asks for: detection, the model and the service know nothing of
the digit generator, and the layer classes are shared by model and fcn."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["detector", "detector.detect", "detector.fcn", "detector.model",
                                    "detector.draw", "detector.checkpoint", "detector_server.servicer"])
def test_detection_imports_nothing_of_the_digit_data(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.startswith('detector.datasets')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{module} pulls in {out.strip()}"


def test_model_and_fcn_build_on_the_layer_module_and_fcn_knows_no_net():
    """Net.to_fcn() hands itself to fcn.unroll (one way); fcn never imports the model."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent / "detector"
    imported = {}
    for name in ("model", "fcn"):
        tree = ast.parse((root / f"{name}.py").read_text())
        imported[name] = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "architecture" in imported[name], (name, imported[name])
    assert "model" not in imported["fcn"], imported["fcn"]
