"""Checkpoints: identical round trips, clear errors before any large allocation, and atomic
writes that leave no temporary file, even when killed."""
import errno
import io
import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from detector import checkpoint
from detector.atomic import atomic_write
from detector.checkpoint import CheckpointError
from detector.datasets.coco import atomic_write_json
from detector.model import Net

ROOT = pathlib.Path(__file__).resolve().parent.parent


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


def rewrite(path, mutate_header=None, drop=None, add=None, header_text=None):
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    header = json.loads(arrays["__header__"].tobytes())
    if mutate_header:
        mutate_header(header)
    text = json.dumps(header) if header_text is None else header_text
    arrays["__header__"] = np.frombuffer(text.encode(), np.uint8)
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
    (dict(spec="fc99999999 fc11"), "more than the 20,000,000"),  # activations
    (dict(spec="fc9999999 fc11"), "more than the 50,000,000"),  # parameters
    (dict(classes="background"), "header field 'classes' must be a list of class names"),
    (dict(background="zebra"), "background class 'zebra'"),
    (dict(dtype="object"), "float32 or float64"),
    (dict(normalisation=[1, 2]), "header field 'normalisation' must be"),
    (dict(spec="fc1" + "0" * 400 + " fc11"), "valid net"),  # beyond float: OverflowError inside Net
    # a 2^32 x 2^32 activation, whose size would wrap to 0 in int64
    (dict(spec="conv1@1x1+2147483647 fc11", input_shape=[1, 2, 2]), "18,446,744,073,709,551,631 activations"),
])
def test_hostile_header_fails_before_allocating(saved, change, message):
    rewrite(saved, mutate_header=lambda h: h.update(change))
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(str(saved))


# -- the header: every field type-checked before it is used ---------------------------------

@pytest.mark.parametrize("text, kind", [("[1, 2]", "array"), ("3.5", "number"), ("7", "number"),
                                        ('"detector-checkpoint"', "string"), ("null", "null"),
                                        ("true", "boolean")])
def test_a_header_that_is_no_json_object(saved, text, kind):
    rewrite(saved, header_text=text)
    for read in (checkpoint.load, checkpoint.read_header):
        with pytest.raises(CheckpointError, match=f"its header is a JSON {kind}, not an object"):
            read(str(saved))


@pytest.mark.parametrize("text", ["[" * 100_000, '{"format": "detector-', "{'single': 'quotes'}"])
def test_a_header_that_is_no_json(saved, text):
    rewrite(saved, header_text=text)
    with pytest.raises(CheckpointError, match="the header is not valid JSON"):
        checkpoint.load(str(saved))


@pytest.mark.parametrize("field, value", [
    ("spec", 5), ("spec", ["conv16@5x5"]),
    ("input_shape", "1x32x32"), ("input_shape", [1, 32]), ("input_shape", [1, 32.0, 32]),
    ("input_shape", [1, True, 32]), ("input_shape", [1, 32, 0]), ("input_shape", [1, 10 ** 9, 32]),
    ("input_shape", {"channels": 1}),
    ("classes", "background0123456789"), ("classes", list(range(11))), ("classes", {"background": 0}),
    ("normalisation", [0.5, 0.25]), ("normalisation", {"mean": "0.5", "std": 0.25}),
    ("normalisation", {"mean": 0.5}), ("normalisation", {"mean": [0.5, None], "std": 0.25}),
    ("normalisation", {"mean": True, "std": 0.25}), ("normalisation", {"mean": 0.5, "std": 10 ** 400}),
    ("dtype", "object"), ("dtype", 32), ("dtype", ["float32"]),
    ("background", 0), ("background", ["background"]),
    ("object_size", "0.6"), ("object_size", True), ("object_size", 10 ** 400), ("object_size", float("nan")),
    ("object_size", [0.6]),
    ("box_aspects", [1.0]), ("box_aspects", {"0": "wide"}), ("box_aspects", {"0": float("inf")}),
    ("box_regression", 1), ("box_regression", "yes"),
    ("metrics", []), ("metrics", "good"), ("data", "digits"), ("seed", 1.5), ("seed", "5"), ("seed", False),
])
def test_a_header_field_of_the_wrong_type_is_named(saved, field, value):
    rewrite(saved, mutate_header=lambda h: h.update({field: value}))
    for read in (checkpoint.load, checkpoint.read_header):
        with pytest.raises(CheckpointError, match=f"header field '{field}' must be") as caught:
            read(str(saved))
        assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("field", ["spec", "input_shape", "classes", "normalisation"])
def test_a_header_without_a_required_field(saved, field):
    rewrite(saved, mutate_header=lambda h: h.pop(field))
    with pytest.raises(CheckpointError, match=f"the header has no '{field}' field"):
        checkpoint.load(str(saved))


def test_null_optional_fields_mean_their_defaults(saved):
    def nulls(header):
        header.update(background=None, object_size=None, box_aspects=None, box_regression=None, metrics=None,
                      data=None, seed=None, dtype=None)

    rewrite(saved, mutate_header=nulls)
    net = checkpoint.load(str(saved))
    assert net.background == "background" and net.box_regression is False and net.dtype == np.float32
    assert net.metrics == {} and net.data == {}


def test_save_refuses_a_header_that_load_would_refuse(net, tmp_path):
    with pytest.raises(ValueError, match="header field 'metrics' must be an object"):
        checkpoint.save(net, str(tmp_path / "model.npz"), metrics=[0.5])
    with pytest.raises(ValueError, match="more than the 4,194,304"):
        checkpoint.save(net, str(tmp_path / "model.npz"), data={"notes": "x" * (4 << 20)})
    assert os.listdir(tmp_path) == []


# -- nothing large is allocated for a hostile file ------------------------------------------

def peak_bytes_of(call):
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def expect_refusal(path, message):
    def load():
        with pytest.raises(CheckpointError, match=message):
            checkpoint.load(str(path))

    start = time.perf_counter()
    peak = peak_bytes_of(load)
    # the shipped-size model takes ~200 KB to load; anything near the refused sizes is GBs
    assert peak < 20e6, f"{peak:,} bytes allocated before refusing"
    return time.perf_counter() - start


def test_a_huge_spec_is_refused_by_the_parameter_bound_before_allocating(saved):
    rewrite(saved, mutate_header=lambda h: h.update(spec="fc9999999 fc11"))
    # 9,999,999 x 1,024 float32 would be 40 GB; a generous bound for a busy machine
    assert expect_refusal(saved, r"the spec .fc9999999 fc11. has [\d,]+ parameters .* more than the 50,000,000") < 30


def npy_bytes(shape, descr="<f4", data=b""):
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue() + data


def replace_entry(path, name, raw):
    with zipfile.ZipFile(path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    entries[name + ".npy"] = raw
    with zipfile.ZipFile(path, "w") as archive:
        for n, data in entries.items():
            archive.writestr(n, data)


def test_an_array_declaring_a_huge_shape_is_refused_before_it_is_read(saved):
    replace_entry(saved, "fc2.b", npy_bytes((10 ** 12,)))  # 4 TB declared, nothing behind it
    expect_refusal(saved, r"fc2.b is float32\(1000000000000,\), the spec needs float32\(11,\)")


def test_a_header_entry_declaring_a_huge_size_is_refused_before_it_is_read(saved):
    replace_entry(saved, "__header__", npy_bytes((10 ** 12,), "|u1"))
    expect_refusal(saved, r"the header is uint8\(1000000000000,\), not the bytes of a JSON text")


@pytest.mark.parametrize("raw, message", [
    (npy_bytes((11,), data=b"\0" * 20), "fc2.b' is truncated or corrupt"),
    (b"\0" * 1000, "fc2.b' is not a readable .npy array"),
    (npy_bytes((11,), "|O"), "cannot be read without pickle"),
])
def test_a_corrupt_array_entry(saved, raw, message):
    replace_entry(saved, "fc2.b", raw)
    expect_refusal(saved, message)


def test_fortran_ordered_and_compressed_arrays_load_identically(net, saved):
    with np.load(saved) as archive:
        arrays = {k: archive[k] for k in archive.files}
    np.savez_compressed(saved, **{k: np.asfortranarray(v) for k, v in arrays.items()})
    loaded = checkpoint.load(str(saved))
    assert all(v.flags.c_contiguous for v in loaded.params.values())
    x = np.random.default_rng(2).random((3, 1, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))


# -- atomic writes ---------------------------------------------------------------------------

def o_tmpfile_works(folder):
    if not hasattr(os, "O_TMPFILE") or not os.path.isdir("/proc/self/fd"):
        return False
    try:
        os.close(os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o600))
    except OSError:
        return False
    return True


@pytest.fixture(params=["unnamed file", "no O_TMPFILE", "O_TMPFILE refused"])
def write_path(request, monkeypatch, tmp_path):
    """Each way atomic_write can go: O_TMPFILE, or the named fallback where the system lacks
    it or the filesystem refuses it."""
    if request.param == "unnamed file":
        if not o_tmpfile_works(tmp_path):
            pytest.skip("O_TMPFILE does not work here")
    elif request.param == "no O_TMPFILE":
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    else:
        if not hasattr(os, "O_TMPFILE"):
            pytest.skip("no O_TMPFILE to refuse")
        real_open = os.open

        def refusing(path, flags, *args, **kwargs):
            if flags & os.O_TMPFILE == os.O_TMPFILE:
                raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP), path)
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", refusing)
    return request.param


def test_a_save_leaves_exactly_the_target(write_path, net, tmp_path):
    path = tmp_path / "model.npz"
    checkpoint.save(net, str(path))
    assert os.listdir(tmp_path) == ["model.npz"]
    other = Net(seed=6)
    checkpoint.save(other, str(path))  # over the old file
    assert os.listdir(tmp_path) == ["model.npz"]
    x = np.random.default_rng(3).random((2, 1, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(checkpoint.load(str(path)).predict(x), other.predict(x))


def test_only_the_fallback_gives_the_file_a_name_while_it_is_written(write_path, tmp_path):
    with atomic_write(tmp_path / "doc.json", "w", encoding="utf-8") as f:
        f.write('{"é": 1}')
        during = os.listdir(tmp_path)
    assert os.listdir(tmp_path) == ["doc.json"] and json.loads((tmp_path / "doc.json").read_text("utf-8")) == {"é": 1}
    if write_path == "unnamed file":
        assert during == []
    else:
        assert len(during) == 1 and during[0].startswith(".doc.json.") and during[0].endswith(".tmp"), during


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_leaves_the_old_file_and_nothing_else(write_path, saved, monkeypatch, error):
    before = saved.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise error

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(type(error)):
        checkpoint.save(Net(seed=6), str(saved))
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == ["model.npz"]


def test_a_saved_file_has_the_permissions_of_a_new_file(write_path, net, tmp_path):
    path = tmp_path / "model.npz"
    old = os.umask(0o027)
    try:
        checkpoint.save(net, str(path))
        new_mode = path.stat().st_mode & 0o777
        checkpoint.save(net, str(path))
        replaced_mode = path.stat().st_mode & 0o777
    finally:
        os.umask(old)
    assert new_mode == replaced_mode == 0o640  # 0o666 less the umask: not mkstemp's 0o600


def test_errors_name_the_target_not_a_temporary_file(write_path, net, tmp_path):
    missing = tmp_path / "missing" / "x.npz"
    with pytest.raises(FileNotFoundError) as caught:
        checkpoint.save(net, str(missing))
    assert caught.value.filename == str(missing) and caught.value.filename2 is None
    assert str(missing) in str(caught.value)
    folder = tmp_path / "model.npz"
    folder.mkdir()  # a folder where the file should go: the final rename fails
    with pytest.raises(OSError) as caught:
        checkpoint.save(net, str(folder))
    assert caught.value.filename == str(folder) and caught.value.filename2 is None
    assert os.listdir(tmp_path) == ["model.npz"] and os.listdir(folder) == []


def test_atomic_write_json_leaves_only_its_file(write_path, tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(str(path), [{"image_id": 1}])
    atomic_write_json(str(path), {"classe": "éclair"})
    with pytest.raises(TypeError):
        atomic_write_json(str(path), {"score": object()})  # fails halfway through the dump
    assert json.loads(path.read_text("utf-8")) == {"classe": "éclair"}
    assert os.listdir(tmp_path) == ["results.json"]


def test_atomic_write_only_writes_new_files(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"):
        with atomic_write(tmp_path / "x", "a"):
            pass
    assert os.listdir(tmp_path) == []


# A child that starts a save, reports that the file is open and partly written, and then
# hangs there until the parent kills it.
CHILD = """
import sys, time
import numpy as np
from detector import checkpoint
from detector.model import Net

def stalled_savez(f, **arrays):
    f.write(b"PK partial checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(3600)

np.savez = stalled_savez
checkpoint.save(Net(seed=7), sys.argv[1])
"""


@pytest.mark.parametrize("old_file", [True, False], ids=["over an old file", "a new file"])
def test_a_save_killed_midway_leaves_no_file(net, tmp_path, old_file):
    if not o_tmpfile_works(tmp_path):
        pytest.skip("without O_TMPFILE, a SIGKILLed save leaves its temporary file")
    path = tmp_path / "model.npz"
    if old_file:
        checkpoint.save(net, str(path))
        before = path.read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([child.stdout], [], [], 300)  # waits for the child, however busy
        line = child.stdout.readline() if ready else ""
        during = sorted(os.listdir(tmp_path))
    finally:
        child.kill()  # SIGKILL: no handler, no finally, no cleanup runs in the child
        child.wait()
    assert line == "writing\n", f"the child never reached its save: {child.stderr.read()}"
    assert child.returncode == -signal.SIGKILL
    expected = ["model.npz"] if old_file else []
    assert during == expected  # mid-save, the new file has no name
    assert sorted(os.listdir(tmp_path)) == expected
    if old_file:
        assert path.read_bytes() == before
