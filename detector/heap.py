"""Keep freed arrays in the C heap while training, instead of giving them back to the OS.

A training step frees and allocates the same few megabytes of activations and gradients
every time. glibc serves allocations above its mmap threshold (128 KiB at first, raised as
large blocks are freed, up to 32 MiB) with fresh pages from the kernel, and returns them
when freed: every step then pays a page fault per 4 KiB page. Measured on the default net's
step (batch 64, one thread): 12.6 ms, of which a third in the kernel's page faults, against
7.9 ms with the thresholds raised so that the heap keeps the memory for the next step.

:func:`retain` raises them for this process (glibc only; elsewhere it does nothing). The
trainer, batch detection (its processes and Dask workers, whose nanny asks glibc to trim at
once) and the training benchmarks call it; a server does not, so that its memory goes back
to the OS after a large request.
"""
import ctypes
import ctypes.util

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

_done = False


def retain(mmap_bytes=256 << 20, trim_bytes=512 << 20):
    """Serve allocations up to ``mmap_bytes`` from the heap and keep up to ``trim_bytes`` of
    free memory at its top. True when glibc took the settings."""
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False  # not glibc
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, mmap_bytes)) and bool(mallopt(M_TRIM_THRESHOLD, trim_bytes))
    return _done
