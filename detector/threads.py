"""How many OpenMP threads the kernels use.

The default is the number of cores this process may run on, or the environment variable
``DETECTOR_NUM_THREADS``; :func:`set_num_threads` changes it at run time. Results do not
depend on it: the kernels split work into chunks fixed by the shapes alone.
"""
import os
import threading

ENV_VAR = "DETECTOR_NUM_THREADS"

_lock = threading.Lock()
_num_threads = None


def _positive_int(value, source):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{source} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{source} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{source} must be a positive integer, got {value!r}")
    return number


def _default_num_threads():
    value = os.environ.get(ENV_VAR, "").strip()
    if value:
        return _positive_int(value, ENV_VAR)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def get_num_threads():
    """The number of threads each kernel call uses."""
    global _num_threads
    with _lock:
        if _num_threads is None:
            _num_threads = _default_num_threads()
        return _num_threads


def set_num_threads(n):
    """Use ``n`` threads in every kernel call from now on; return the previous number."""
    global _num_threads
    n = _positive_int(n, "the number of threads")
    previous = get_num_threads()
    with _lock:
        _num_threads = n
    return previous
