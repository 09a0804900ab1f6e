"""Checkpoints: identical round trips, clear errors, atomic writes."""
import json
import os

import numpy as np
import pytest

from detector import checkpoint
from detector.checkpoint import CheckpointError
from detector.model import Net


@pytest.fixture
def net():
    return Net(seed=5)


@pytest.fixture
def saved(net, tmp_path):
    path = tmp_path / "model.npz"
    checkpoint.save(net, str(path), metrics={"val_accuracy": 0.5}, seed=5)
    return path


def test_round_trip_gives_bit_identical_outputs(net, saved):
    loaded = checkpoint.load(str(saved))
    x = np.random.default_rng(0).random((7, 1, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    assert loaded.spec == net.spec and loaded.classes == net.classes
    assert loaded.metrics == {"val_accuracy": 0.5}
    assert checkpoint.read_header(str(saved))["seed"] == 5
    umask = os.umask(0)
    os.umask(umask)
    assert saved.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load(str(saved))


def rewrite(path, mutate_header=None, drop=None, add=None):
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    header = json.loads(arrays["__header__"].tobytes())
    if mutate_header:
        mutate_header(header)
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    for name in drop or ():
        del arrays[name]
    arrays.update(add or {})
    np.savez(path, **arrays)


def test_future_version(saved):
    rewrite(saved, mutate_header=lambda h: h.update(version=99))
    with pytest.raises(CheckpointError, match="version 99, newer than this detector reads"):
        checkpoint.load(str(saved))


def test_missing_array(saved):
    rewrite(saved, drop=["fc2.w"])
    with pytest.raises(CheckpointError, match=r"missing \['fc2.w'\]"):
        checkpoint.load(str(saved))


def test_wrong_shape(saved):
    rewrite(saved, add={"fc2.b": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match=r"fc2.b is float32\(3,\), the spec needs float32\(11,\)"):
        checkpoint.load(str(saved))


def test_array_that_would_need_pickle(saved):
    rewrite(saved, add={"fc2.b": np.array([{"evil": 1}] * 11, dtype=object)})
    with pytest.raises(CheckpointError, match="pickle"):
        checkpoint.load(str(saved))


def test_foreign_npz_and_foreign_file(tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a detector checkpoint"):
        checkpoint.load(str(foreign))
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable .npz"):
        checkpoint.load(str(text))
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoint.load(str(tmp_path / "absent.npz"))


def test_failed_write_leaves_the_old_file(net, saved, monkeypatch):
    before = saved.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(Net(seed=6), str(saved))
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == ["model.npz"]  # no temporary file left behind


def test_priors_round_trip(tmp_path):
    net = Net("conv3@3x3 relu maxpool2 fc4", (3, 10, 10), ["cat", "none", "dog", "owl"], seed=2,
              background="none", object_size=0.7, box_aspects={"cat": 1.25, "owl": 0.5},
              normalisation={"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}, box_regression=True)
    path = tmp_path / "colour.npz"
    checkpoint.save(net, str(path), data={"source": "coco", "category_ids": {"cat": 3}})
    loaded = checkpoint.load(str(path))
    assert loaded.priors() == net.priors() and loaded.data["category_ids"] == {"cat": 3}
    x = np.random.default_rng(1).random((3, 3, 10, 10), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict_boxes(x)[1], net.predict_boxes(x)[1])


def test_version_1_files_load_with_the_documented_defaults(saved):
    def as_version_1(header):
        header["version"] = 1
        for key in ("background", "object_size", "box_aspects", "box_regression", "data"):
            header.pop(key)
        header["normalisation"] = {"mean": 0.5, "std": 0.25}

    rewrite(saved, mutate_header=as_version_1)
    net = checkpoint.load(str(saved))
    assert net.background == "background" and net.box_regression is False
    assert net.normalisation == {"mean": [0.5], "std": [0.25]} and set(net.box_aspects.values()) == {1.0}


@pytest.mark.parametrize("version", ["1", 0, -3, True, None, 1.0])
def test_a_version_that_is_no_version_number(saved, version):
    rewrite(saved, mutate_header=lambda h: h.update(version=version))
    with pytest.raises(CheckpointError, match="is not a version number"):
        checkpoint.load(str(saved))


@pytest.mark.parametrize("change, message", [
    (dict(spec="fc99999999 fc11"), "50,000,000"),
    (dict(classes="background"), "valid net"),
    (dict(background="zebra"), "background class 'zebra'"),
    (dict(dtype="object"), "float32 or float64"),
    (dict(normalisation=[1, 2]), "valid net"),
])
def test_hostile_header_fails_before_allocating(saved, change, message):
    rewrite(saved, mutate_header=lambda h: h.update(change))
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(str(saved))
