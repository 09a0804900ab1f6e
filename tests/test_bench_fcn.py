"""The references of ``detector bench fcn`` and ``bench train`` compute what our net computes,
and both benchmarks run from the command line with JSON in the shared vocabulary.

PyTorch and ONNX Runtime are optional references: their tests are skipped without them.
"""
import json

import numpy as np
import pytest

import detector
from detector.bench import references
from detector.cli import main


@pytest.fixture(scope="module")
def fcn_and_image():
    net = detector.load_model()
    image = np.random.default_rng(0).random((1, net.channels, 75, 98), dtype=np.float32)  # odd, not square
    return net.to_fcn(), net.normalise(image).astype(np.float32)


def test_torch_reference_gives_our_fcn_scores(fcn_and_image):
    pytest.importorskip("torch")
    fcn, x = fcn_and_image
    ours = fcn.scores(x)
    theirs = references.torch_fcn(fcn).scores(x)
    assert theirs.shape == ours.shape == (1, fcn.outputs, *fcn.map_size(75, 98))
    assert np.abs(theirs - ours).max() < references.TOLERANCE


@pytest.mark.parametrize("threads", [1, 2])
def test_onnx_runtime_reference_gives_our_fcn_scores(fcn_and_image, threads):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    fcn, x = fcn_and_image
    ours = fcn.scores(x)
    theirs = references.OnnxRuntimeFcn(fcn, threads).scores(x)
    assert theirs.shape == ours.shape
    assert np.abs(theirs - ours).max() < references.TOLERANCE


def test_onnx_graph_has_our_weights_and_dynamic_sides(fcn_and_image):
    onnx = pytest.importorskip("onnx")
    fcn, _ = fcn_and_image
    model = references.onnx_fcn(fcn)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert weights.keys() == fcn.params.keys()
    for name, value in fcn.params.items():
        np.testing.assert_array_equal(weights[name], value)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims][2:] == ["H", "W"]
    assert {n.op_type for n in model.graph.node} == {"Conv", "Relu", "MaxPool"}


def test_a_reference_that_differs_is_refused():
    ours = np.zeros((1, 2, 3, 3), np.float32)
    assert references.check_same("x", ours, ours + 1e-5) < references.TOLERANCE
    with pytest.raises(RuntimeError, match="does not compute"):
        references.check_same("x", ours, ours + 0.01)
    with pytest.raises(RuntimeError, match="shapes"):
        references.check_same("x", ours, ours[:, :, :2])


def test_bench_fcn_json(capsys):
    assert main(["bench", "fcn", "--sizes", "64", "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    [row] = result["runs"]
    assert row["threads"] == 1 and row["image_size"] == {"width": 64, "height": 64}
    assert row["map_size"] == {"width": 9, "height": 9} and result["window"] == {"width": 32, "height": 32}
    assert row["detector_ms"] > 0
    for name in ("torch", "onnxruntime"):
        if result["references"][name]:
            assert row[f"{name}_ms"] > 0 and row[f"speedup_vs_{name}"] > 0
            assert row[f"{name}_max_abs_difference"] < references.TOLERANCE
        else:
            assert row[f"{name}_ms"] is None and result["notes"]
    assert [g["threads"] for g in result["geomean"]] == [1]
    # one side and one thread count cannot judge a target over 512-2048 at 1 and 2 threads
    assert result["target"]["met"] is None and "not judged" in result["target"]["verdict"]


def test_bench_train_json(capsys):
    assert main(["bench", "train", "--threads", "1", "--batch", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["batch"] == 8 and result["input_shape"] == [1, 32, 32]
    [row] = result["runs"]
    assert row["threads"] == 1 and row["detector_ms"] > 0
    assert set(row["detector_phases_ms"]) == {"forward_ms", "loss_ms", "backward_ms", "update_ms"}
    assert all(ms > 0 for ms in row["detector_phases_ms"].values())
    if result["references"]["torch"]:
        assert row["torch_ms"] > 0 and row["speedup_vs_torch"] > 0
        assert row["loss_difference"] < 1e-4 and row["relative_update_difference"] < 1e-4
        assert [c["what"] for c in result["target"]["checks"]] == ["1 thread"]
    else:
        assert row["torch_ms"] is None and result["notes"]


def test_bench_help_shows_the_defaults(capsys):
    for argv, defaults in ((["bench", "fcn"], ["(default: 1,2)", "(default: 256,512,1024,2048)"]),
                           (["bench", "train"], ["(default: 1,2)", "(default: 64)"])):
        with pytest.raises(SystemExit) as exit_:
            main(argv + ["--help"])
        assert exit_.value.code == 0
        flat = " ".join(capsys.readouterr().out.split())
        assert all(d in flat for d in defaults), flat


@pytest.mark.parametrize("argv, culprit", [
    (["bench", "fcn", "--sizes", "16"], "--sizes"),
    (["bench", "fcn", "--threads", "0"], "--threads"),
    (["bench", "train", "--batch", "0"], "--batch"),
])
def test_bench_arguments_are_checked_by_the_parser(capsys, argv, culprit):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and f"argument {culprit}" in capsys.readouterr().err


def test_benches_without_references_skip_their_columns_with_a_note(monkeypatch, capsys):
    notes = {"torch": "PyTorch is not installed", "onnxruntime": "ONNX Runtime is not installed"}
    monkeypatch.setattr(references, "missing", lambda: dict(notes))
    assert main(["bench", "fcn", "--sizes", "40", "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    [row] = result["runs"]
    assert row["detector_ms"] > 0 and row["torch_ms"] is None and row["speedup_vs_onnxruntime"] is None
    assert result["notes"] == list(notes.values()) and result["references"] == {"torch": None, "onnxruntime": None}
    assert result["target"]["verdict"] == "not judged: ONNX Runtime is not installed"
    assert main(["bench", "train", "--threads", "1", "--batch", "4"]) == 0
    text = capsys.readouterr().out
    assert "note: PyTorch is not installed" in text and "not judged: PyTorch is not installed" in text


def test_bench_algorithms_times_every_kernel_and_judges_the_choice():
    from detector.bench import algorithms

    grid = {"filters": (5,), "channels": (1, 16), "outputs": (8,), "side": (20,), "pool": (1, 2)}
    result = algorithms.run(threads=1, grid=grid)
    assert len(result["rows"]) == 4
    for row in result["rows"]:
        times = {k: row[f"{k}_ms"] for k in algorithms.KERNELS}
        assert all(t > 0 for t in times.values())
        assert row["fastest"] == min(times, key=times.get)
        assert row["chosen"] in algorithms.KERNELS
        assert row["chosen_over_fastest"] == times[row["chosen"]] / times[row["fastest"]]
    summary = result["summary"]
    assert summary["chosen_is_fastest"] == sum(row["chosen"] == row["fastest"] for row in result["rows"])
    assert summary["total_im2col_ms"] == pytest.approx(sum(row["im2col_ms"] for row in result["rows"]))
    assert "the choice is the fastest kernel on" in algorithms.format_table(result)


def test_paired_medians_take_turns():
    from detector.bench.timing import paired_median_seconds

    calls = []
    medians = paired_median_seconds([lambda: calls.append("a"), lambda: calls.append("b")],
                                    min_repeats=5, min_seconds=0)
    assert len(medians) == 2 and all(m >= 0 for m in medians)
    assert calls[:4] == ["a", "b", "a", "b"] and calls.count("a") == calls.count("b") == 7
    assert all(x != y for x, y in zip(calls, calls[1:])), "the two alternate, call by call"
