"""The compiled kernels. Private: use :mod:`detector.layers`, which checks arguments.

The kernels call BLAS (``scipy_cblas_sgemm``/``dgemm``) from the scipy-openblas32 wheel.
Loading that library with RTLD_GLOBAL first is what lets their symbols resolve. The kernels
call BLAS from inside their own OpenMP threads, one small GEMM per chunk, so this OpenBLAS is
kept to one thread: nested thread pools would oversubscribe the cores. NumPy's own BLAS is a
separate library and is not touched.

GNU OpenMP's threads spin for a while after each parallel region before they sleep. When
another busy process shares the cores, that spinning steals their time: two processes each
ran several times slower than their fair half. A short spin keeps the speed of a process
alone and shares fairly, so it is the default unless GOMP_SPINCOUNT or OMP_WAIT_POLICY is set. It must be in the environment before libgomp loads with our modules.

OpenBLAS picks its kernels from the CPU it detects, and on some CPUs with AVX-512 (AMD's
Zen 4 under a hypervisor, for one) it falls back to its AVX2 "Haswell" kernels: SGEMM on one
core ran at 127 GFLOP/s there, and at 235 with the AVX-512 "SkylakeX" kernels, which such a
CPU runs. So when the CPU has the AVX-512 subsets those kernels use and OPENBLAS_CORETYPE is
not set, it is set to SKYLAKEX before the library loads. NumPy's OpenBLAS has loaded by
then and keeps its own choice.
"""
import ctypes
import os

if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

_SKYLAKEX_FLAGS = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"}


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


if "OPENBLAS_CORETYPE" not in os.environ and _SKYLAKEX_FLAGS <= _cpu_flags():
    os.environ["OPENBLAS_CORETYPE"] = "SKYLAKEX"

import scipy_openblas32  # noqa: E402  (after the environment is set)

_openblas = ctypes.CDLL(
    os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True)),
    mode=ctypes.RTLD_GLOBAL,
)
_openblas.scipy_openblas_set_num_threads(1)

from . import activations, conv, linear, parallel, pool  # noqa: E402  (needs BLAS loaded)

__all__ = ["activations", "conv", "linear", "parallel", "pool"]
