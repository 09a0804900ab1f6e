"""Fully-connected kernels: out = x @ w.T + b, in fixed blocks of rows handed to BLAS.

Blocks are a fixed number of rows (never a share of the thread count), and the weight
gradient is split over the rows of w, so no sum depends on how many threads ran.
"""
from cython cimport floating
from cython.parallel cimport prange

from blas cimport gemm

cdef Py_ssize_t ROWS = 64


def linear_forward(const floating[:, ::1] x,  # IN (N, D)
                   const floating[:, ::1] w,  # IN (M, D)
                   const floating[::1] b,  # IN (M,)
                   floating[:, ::1] out,  # OUT (N, M)
                   int num_threads):
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], M = w.shape[0]
    cdef Py_ssize_t chunk, r0, r1, i, m
    with nogil:
        for chunk in prange((N + ROWS - 1) // ROWS, num_threads=num_threads, schedule='static'):
            r0 = chunk * ROWS
            r1 = min(r0 + ROWS, N)
            for i in range(r0, r1):
                for m in range(M):
                    out[i, m] = b[m]
            gemm(False, True, r1 - r0, M, D, &x[r0, 0], D, &w[0, 0], D, 1, &out[r0, 0], M)


def linear_backward(const floating[:, ::1] dout,  # IN (N, M)
                    const floating[:, ::1] x,  # IN (N, D)
                    const floating[:, ::1] w,  # IN (M, D)
                    floating[:, ::1] dx,  # OUT (N, D)
                    floating[:, ::1] dw,  # OUT (M, D)
                    floating[::1] db,  # OUT (M,)
                    int num_threads):
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], M = w.shape[0]
    cdef Py_ssize_t chunk, r0, r1, n_row_chunks = (N + ROWS - 1) // ROWS
    cdef Py_ssize_t n_weight_chunks = (M + ROWS - 1) // ROWS, m, n
    cdef double acc
    with nogil:
        for chunk in prange(n_row_chunks + n_weight_chunks, num_threads=num_threads,
                            schedule='static'):
            if chunk < n_row_chunks:
                # dx rows (r, D) = dout rows (r, M) @ w (M, D)
                r0 = chunk * ROWS
                r1 = min(r0 + ROWS, N)
                gemm(False, False, r1 - r0, D, M, &dout[r0, 0], M, &w[0, 0], D, 0, &dx[r0, 0], D)
            else:
                # dw rows (r, D) = dout[:, rows].T (r, N) @ x (N, D); db rows = column sums
                r0 = (chunk - n_row_chunks) * ROWS
                r1 = min(r0 + ROWS, M)
                gemm(True, False, r1 - r0, D, N, &dout[0, r0], M, &x[0, 0], D, 0, &dw[r0, 0], D)
                for m in range(r0, r1):
                    acc = 0
                    for n in range(N):
                        acc = acc + dout[n, m]
                    db[m] = <floating>acc
