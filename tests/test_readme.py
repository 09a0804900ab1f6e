"""The README's example runs as written."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_layer_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README.md has no python example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["out"].shape == (8, 16, 28, 28)
    assert namespace["dx"].shape == namespace["x"].shape
    assert np.isfinite(namespace["loss"])
    assert namespace["w_conv"].shape == (11, 16, 14, 14)
