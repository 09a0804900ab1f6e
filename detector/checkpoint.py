"""Checkpoints: one ``.npz`` of parameter arrays plus a JSON header, never pickled.

The header holds the format version, the spec, the input shape, and the model's priors
(class names, the background class, per-channel normalisation, the object size the windows
were trained for, each class's box aspect, whether a box-regression head rides on the last
layer; see :mod:`detector.model`), then the training metrics, the seed and a description of
the data. Version 1 files (before the priors) still load: their background is the first
class, their object size the digits' 0.632 of the window and their box aspects 1.

Writes go to a temporary file in the same folder, which is then renamed into place, so a
failed write leaves the old file whole.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from .model import DEFAULT_OBJECT_SIZE, Net

FORMAT = "detector-checkpoint"
VERSION = 2
_HEADER = "__header__"


class CheckpointError(ValueError):
    """A file that is not a readable detector checkpoint; the message says why."""


def save(net, path, metrics=None, seed=None, data=None):
    """Write ``net`` to ``path`` (.npz) atomically; ``metrics``, ``seed`` and ``data`` (a
    description of the training data) go in the header."""
    header = {
        "format": FORMAT, "version": VERSION, "spec": net.spec, "input_shape": list(net.input_shape),
        **{k: v for k, v in net.priors().items() if k not in ("channels", "window")},
        "metrics": metrics or {}, "seed": seed, "data": data or {}, "dtype": str(net.dtype),
    }
    arrays = {name: np.ascontiguousarray(value) for name, value in net.params.items()}
    arrays[_HEADER] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a model is not
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_header(path):
    """The JSON header of a checkpoint, checked for format and version."""
    with _open(path) as archive:
        return _header(archive, path)


def load(path):
    """The :class:`Net` saved at ``path``. Raises :class:`CheckpointError` (a ValueError)
    for a truncated, foreign or future-version file, and ``FileNotFoundError`` if missing."""
    with _open(path) as archive:
        header = _header(archive, path)
        try:
            net = Net(header["spec"], header["input_shape"], header["classes"],
                      normalisation=header["normalisation"], dtype=_dtype(header.get("dtype", "float32")),
                      background=header.get("background"), object_size=header.get("object_size", DEFAULT_OBJECT_SIZE),
                      box_aspects=header.get("box_aspects"), box_regression=header.get("box_regression", False))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(f"{path}: the header does not describe a valid net: {error}") from None
        names = set(archive.files) - {_HEADER}
        missing, extra = set(net.params) - names, names - set(net.params)
        if missing or extra:
            raise CheckpointError(
                f"{path}: the arrays do not match the spec {header['spec']!r}: "
                f"missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        for name, expected in net.params.items():
            value = _array(archive, name, path)
            if value.shape != expected.shape or value.dtype != expected.dtype:
                raise CheckpointError(
                    f"{path}: {name} is {value.dtype}{value.shape}, the spec needs {expected.dtype}{expected.shape}"
                )
            net.params[name] = value
    net.metrics = header.get("metrics") or {}
    net.data = header.get("data") or {}
    return net


def _dtype(name):
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {name!r}")
    return np.dtype(name)


def _open(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable .npz checkpoint (truncated or foreign?): {error}") from None


def _array(archive, name, path):
    try:
        return archive[name]
    except ValueError as error:  # e.g. an object array, which would need pickle
        raise CheckpointError(f"{path}: array {name!r} cannot be read without pickle, which is never used: {error}") from None
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: array {name!r} is truncated or corrupt: {error}") from None


def _header(archive, path):
    if _HEADER not in archive.files:
        raise CheckpointError(f"{path} has no detector header: it is not a detector checkpoint")
    try:
        header = json.loads(_array(archive, _HEADER, path).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: the header is not valid JSON: {error}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a detector checkpoint (format {header.get('format') if isinstance(header, dict) else None!r})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: checkpoint format version {str(version)[:40]!r} is not a version "
                              "number (1, 2, ...)")
    if version > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}, newer than this detector reads "
            f"({VERSION}): upgrade detector"
        )
    return header
