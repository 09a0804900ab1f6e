"""Checkpoints: one ``.npz`` of parameter arrays plus a JSON header, never pickled.

The header holds the format version, the spec, the input shape, and the model's priors
(class names, the background class, per-channel normalisation, the object size the windows
were trained for, each class's box aspect, whether a box-regression head rides on the last
layer; see :mod:`detector.model`), then the training metrics, the seed and a description of
the data. Version 1 files (before the priors) still load: their background is the first
class, their object size the digits' 0.632 of the window and their box aspects 1.

Writes go through :func:`detector.atomic.atomic_write`: a failed save leaves the old file
whole, and a killed one leaves no temporary file.

A file may be truncated, foreign or hostile, so :func:`load` trusts nothing before it has
checked it, and checks before it allocates:

1. the header's ``.npy`` entry must declare a 1-D uint8 array of at most
   ``MAX_HEADER_BYTES``, and be JSON for an object with the right format and version;
2. every field is type-checked (:data:`_FIELDS`) before any is used: a wrong type is a
   :class:`CheckpointError` naming the field;
3. the net is built from the header, and :class:`~detector.model.Net` refuses a spec of more
   than ``MAX_PARAMETERS`` parameters before allocating them;
4. each array's shape and dtype, as its ``.npy`` header declares them, must be what the
   spec implies before any array is read, so a declared shape cannot make us allocate.

:func:`save` runs the same header checks, so what it writes, :func:`load` reads.
"""
import json
import math
import os
import zipfile
import zlib

import numpy as np

from .atomic import atomic_write
from .model import DEFAULT_OBJECT_SIZE, Net

FORMAT = "detector-checkpoint"
VERSION = 2
_HEADER = "__header__"
# ~400 times the shipped model's header, which training history and data descriptions
# could grow into; small enough that parsing it costs little memory
MAX_HEADER_BYTES = 4 << 20
# far above any window a sliding-window classifier has: refuses an absurd input shape
# before a net is built on it
MAX_SIDE = 1 << 16
# .npz files are stored (np.savez) or deflated (np.savez_compressed); nothing else is read
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)


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
    text = json.dumps(header, sort_keys=True).encode()
    _check_fields(header, path)
    if len(text) > MAX_HEADER_BYTES:
        raise ValueError(f"{path}: the header would take {len(text):,} bytes, more than the "
                         f"{MAX_HEADER_BYTES:,} a checkpoint may have (are the metrics or data huge?)")
    arrays = {name: np.ascontiguousarray(value) for name, value in net.params.items()}
    arrays[_HEADER] = np.frombuffer(text, np.uint8)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def read_header(path):
    """The JSON header of a checkpoint, checked for format, version and field types."""
    with _open(path) as archive:
        return _header(archive, _members(archive, path), path)


def load(path):
    """The :class:`Net` saved at ``path``. Raises :class:`CheckpointError` (a ValueError)
    for a truncated, foreign, hostile or future-version file, and ``FileNotFoundError`` if
    missing; in each case before any large allocation (see the module docstring)."""
    with _open(path) as archive:
        members = _members(archive, path)
        header = _header(archive, members, path)
        try:
            net = Net(header["spec"], header["input_shape"], header["classes"],
                      normalisation=header["normalisation"], dtype=np.dtype(_get(header, "dtype", "float32")),
                      background=_get(header, "background", None),
                      object_size=_get(header, "object_size", DEFAULT_OBJECT_SIZE),
                      box_aspects=_get(header, "box_aspects", None),
                      box_regression=_get(header, "box_regression", False))
        except (ValueError, ArithmeticError) as error:  # ArithmeticError: sizes in the spec beyond float or int64
            raise CheckpointError(f"{path}: the header does not describe a valid net: {error}") from None
        names = set(members) - {_HEADER}
        missing, extra = set(net.params) - names, names - set(net.params)
        if missing or extra:
            raise CheckpointError(
                f"{path}: the arrays do not match the spec {header['spec']!r}: "
                f"missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        for name, expected in net.params.items():
            shape, dtype = _declared(archive, members[name], name, path)
            if shape != expected.shape or dtype != expected.dtype:
                raise CheckpointError(
                    f"{path}: {name} is {dtype}{shape}, the spec needs {expected.dtype}{expected.shape}"
                )
        for name in net.params:
            net.params[name] = np.ascontiguousarray(_read(archive, members[name], name, path))
    net.metrics = _get(header, "metrics", {})
    net.data = _get(header, "data", {})
    return net


def _get(header, key, default):
    """An optional header field; absent or null means the default."""
    value = header.get(key)
    return default if value is None else value


def _open(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return zipfile.ZipFile(path)
    except _CORRUPT as error:
        raise CheckpointError(f"{path} is not a readable .npz checkpoint (truncated or foreign?): {error}") from None


def _members(archive, path):
    """The archive's entries by array name (np.load's names: without ".npy")."""
    members = {}
    for info in archive.infolist():
        name = info.filename[:-len(".npy")] if info.filename.endswith(".npy") else info.filename
        if info.compress_type not in _COMPRESSIONS or info.flag_bits & 0x1:
            raise CheckpointError(f"{path}: array {name!r} is encrypted or compressed in a way np.savez never "
                                  "writes: not a detector checkpoint")
        members[name] = info
    return members


def _declared(archive, info, name, path):
    """The (shape, dtype) that the .npy header of entry ``info`` declares; reads no data."""
    try:
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} is not one np.savez writes for numbers")
    except _CORRUPT as error:
        raise CheckpointError(f"{path}: array {name!r} is not a readable .npy array: {error}") from None
    if dtype.hasobject:
        raise CheckpointError(f"{path}: array {name!r} holds Python objects, which cannot be read without "
                              "pickle, which is never used")
    return shape, dtype


def _read(archive, info, name, path):
    """The array in entry ``info``, whose declared shape and dtype the caller has checked."""
    try:
        with archive.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except _CORRUPT as error:
        raise CheckpointError(f"{path}: array {name!r} is truncated or corrupt: {error}") from None


def _header(archive, members, path):
    if _HEADER not in members:
        raise CheckpointError(f"{path} has no detector header: it is not a detector checkpoint")
    shape, dtype = _declared(archive, members[_HEADER], _HEADER, path)
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path}: the header is {dtype}{shape}, not the bytes of a JSON text of at most "
                              f"{MAX_HEADER_BYTES:,} bytes")
    try:
        header = json.loads(_read(archive, members[_HEADER], _HEADER, path).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(f"{path}: the header is not valid JSON: {str(error)[:200]}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a detector checkpoint: its header is a JSON {_json_kind(header)}, "
                              "not an object")
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a detector checkpoint (format {_short(header.get('format'))})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: checkpoint format version {str(version)[:40]!r} is not a version "
                              "number (1, 2, ...)")
    if version > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}, newer than this detector reads "
            f"({VERSION}): upgrade detector"
        )
    _check_fields(header, path)
    return header


def _check_fields(header, path):
    """Raise :class:`CheckpointError` naming the first field of ``header`` with a wrong type."""
    for field, (required, valid, what) in _FIELDS.items():
        if field not in header or header[field] is None:
            if required:
                raise CheckpointError(f"{path}: the header has no {field!r} field")
        elif not valid(header[field]):
            raise CheckpointError(f"{path}: header field {field!r} must be {what}, got {_short(header[field])}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    """A finite JSON number (not a bool: JSON's true is no number)."""
    try:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:  # an integer beyond float
        return False


def _numbers(value):
    return _is_number(value) or isinstance(value, list) and all(_is_number(v) for v in value)


# field: (required, check, what it must be); optional fields may also be absent or null
_FIELDS = {
    "spec": (True, lambda v: isinstance(v, str), "a layer spec (a string)"),
    "input_shape": (True, lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(n) and 1 <= n <= MAX_SIDE
                                                                               for n in v),
                    f"[channels, height, width], integers from 1 to {MAX_SIDE}"),
    "classes": (True, lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
                "a list of class names (strings)"),
    "normalisation": (True, lambda v: isinstance(v, dict) and all(_numbers(v.get(k)) for k in ("mean", "std")),
                      '{"mean": ..., "std": ...}, each a number or a list of numbers'),
    "dtype": (False, lambda v: v in ("float32", "float64"), "float32 or float64"),
    "background": (False, lambda v: isinstance(v, str), "a class name (a string)"),
    "object_size": (False, _is_number, "a number"),
    "box_aspects": (False, lambda v: isinstance(v, dict) and all(_is_number(a) for a in v.values()),
                    "an object of class name: number"),
    "box_regression": (False, lambda v: isinstance(v, bool), "true or false"),
    "metrics": (False, lambda v: isinstance(v, dict), "an object"),
    "data": (False, lambda v: isinstance(v, dict), "an object"),
    "seed": (False, _is_int, "an integer"),
}


def _json_kind(value):
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


def _short(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
