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
"""
import ctypes
import os

if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

import scipy_openblas32

_openblas = ctypes.CDLL(
    os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True)),
    mode=ctypes.RTLD_GLOBAL,
)
_openblas.scipy_openblas_set_num_threads(1)

from . import activations, conv, direct, linear, parallel, pool, winograd  # noqa: E402  (needs BLAS loaded)

__all__ = ["activations", "conv", "direct", "linear", "parallel", "pool", "winograd"]
