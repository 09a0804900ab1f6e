"""detector: a CPU object detector whose CNN layers are our own Cython kernels.

The layer API is :mod:`detector.layers`; :func:`set_num_threads` sets the kernels' threads.
"""
from . import layers
from .threads import get_num_threads, set_num_threads

__all__ = ["layers", "get_num_threads", "set_num_threads"]
