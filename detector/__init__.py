"""detector: a CPU object detector whose CNN layers are our own Cython kernels.

>>> import detector
>>> net = detector.load_model()          # the shipped default model
>>> net.classes[:3], net.window, net.background
(['background', '0', '1'], (32, 32), 'background')

The layer API is :mod:`detector.layers`; :func:`set_num_threads` sets the kernels' threads.
"""
from pathlib import Path

from . import layers
from .detect import DetectOptions, detect
from .model import Net
from .threads import get_num_threads, set_num_threads

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.npz"


def load_model(path=None):
    """The :class:`Net` saved at ``path``, or the shipped default model."""
    from .checkpoint import load

    return load(str(DEFAULT_MODEL if path is None else path))


__all__ = ["DEFAULT_MODEL", "DetectOptions", "Net", "detect", "layers", "load_model", "get_num_threads", "set_num_threads"]
