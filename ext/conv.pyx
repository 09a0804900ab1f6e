"""Convolution kernels: im2col of a block of output rows into per-thread scratch, then BLAS.

The work is cut into chunks (image, block of output rows) whose bounds depend only on the
shapes, never on the thread count, so the results are bit-identical for any number of
threads. The block is sized so that one chunk's columns stay in a core's L2 cache between
im2col writing them and the GEMM reading them.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memcpy, memset

from blas cimport gemm

# About a quarter of the 2 MiB L2 of a current core: room for cols and, in backward, dcols.
cdef Py_ssize_t COLS_BUDGET_BYTES = 1 << 19


cpdef Py_ssize_t rows_per_chunk(Py_ssize_t cff, Py_ssize_t fh, Py_ssize_t sh, Py_ssize_t oh,
                                Py_ssize_t ow, Py_ssize_t itemsize) noexcept:
    """Output rows per chunk for a (cff, rows * ow) column buffer of this item size."""
    cdef Py_ssize_t rows = COLS_BUDGET_BYTES // (cff * ow * itemsize)
    # backward scatters even blocks, then odd ones; blocks two apart must touch disjoint
    # input rows, which holds when (rows + 1) * sh >= fh
    rows = max(rows, (fh + sh - 1) // sh - 1, 1)
    return min(rows, oh)


cdef inline void valid_span(Py_ssize_t n_out, Py_ssize_t n_in, Py_ssize_t stride,
                            Py_ssize_t offset, Py_ssize_t *lo, Py_ssize_t *hi) noexcept nogil:
    """Outputs o in [lo, hi) read input o * stride + offset inside [0, n_in)."""
    lo[0] = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi[0] = 0 if n_in - 1 - offset < 0 else min(n_out, (n_in - 1 - offset) // stride + 1)
    if lo[0] > hi[0]:
        lo[0] = hi[0]


cdef void im2col_rows(const floating *x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                      Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
                      Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t OW, Py_ssize_t r0, Py_ssize_t r1,
                      floating *cols) noexcept nogil:
    """cols[(c, i, j), (oh - r0) * OW + ow] = x[c, oh*SH - PH + i, ow*SW - PW + j], 0 in the padding."""
    cdef Py_ssize_t L = (r1 - r0) * OW
    cdef Py_ssize_t c, i, j, oh, ow, ih, lo, hi
    cdef const floating *src
    cdef floating *dst
    for c in range(C):
        for i in range(FH):
            for j in range(FW):
                valid_span(OW, W, SW, j - PW, &lo, &hi)
                dst = cols + ((c * FH + i) * FW + j) * L
                for oh in range(r0, r1):
                    ih = oh * SH - PH + i
                    if ih < 0 or ih >= H:
                        memset(dst, 0, OW * sizeof(floating))
                    else:
                        src = x + (c * H + ih) * W
                        memset(dst, 0, lo * sizeof(floating))
                        if SW == 1:
                            memcpy(dst + lo, src + lo + j - PW, (hi - lo) * sizeof(floating))
                        else:
                            for ow in range(lo, hi):
                                dst[ow] = src[ow * SW + j - PW]
                        memset(dst + hi, 0, (OW - hi) * sizeof(floating))
                    dst += OW


cdef void col2im_rows(const floating *cols, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                      Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
                      Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t OW, Py_ssize_t r0, Py_ssize_t r1,
                      floating *dx) noexcept nogil:
    """The adjoint of im2col_rows: add every column entry back to the pixel it came from."""
    cdef Py_ssize_t L = (r1 - r0) * OW
    cdef Py_ssize_t c, i, j, oh, ow, ih, lo, hi
    cdef const floating *src
    cdef floating *dst
    for c in range(C):
        for i in range(FH):
            for j in range(FW):
                valid_span(OW, W, SW, j - PW, &lo, &hi)
                src = cols + ((c * FH + i) * FW + j) * L
                for oh in range(r0, r1):
                    ih = oh * SH - PH + i
                    if 0 <= ih < H:
                        dst = dx + (c * H + ih) * W + j - PW
                        for ow in range(lo, hi):
                            dst[ow * SW] += src[ow]
                    src += OW


def conv2d_forward(const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
                   const floating[:, :, :, ::1] w,  # IN (K, C, FH, FW)
                   const floating[::1] b,  # IN (K,)
                   floating[:, :, :, ::1] out,  # OUT (N, K, OH, OW)
                   Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW, int num_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = w.shape[0], FH = w.shape[2], FW = w.shape[3]
    cdef Py_ssize_t OH = out.shape[2], OW = out.shape[3], P = OH * OW, CFF = C * FH * FW
    cdef Py_ssize_t rows = rows_per_chunk(CFF, FH, SH, OH, OW, sizeof(floating))
    cdef Py_ssize_t blocks = (OH + rows - 1) // rows
    cdef floating[:, ::1] scratch = np.empty(
        (num_threads, CFF * rows * OW), dtype=np.float32 if floating is float else np.float64)
    cdef Py_ssize_t chunk, n, r0, r1, k, i
    cdef floating *cols
    cdef floating *o
    with nogil, parallel(num_threads=num_threads):
        cols = &scratch[threadid(), 0]
        for chunk in prange(N * blocks, schedule='static'):
            n = chunk // blocks
            r0 = (chunk % blocks) * rows
            r1 = min(r0 + rows, OH)
            im2col_rows(&x[n, 0, 0, 0], C, H, W, FH, FW, SH, SW, PH, PW, OW, r0, r1, cols)
            o = &out[n, 0, r0, 0]
            for k in range(K):
                for i in range((r1 - r0) * OW):
                    o[k * P + i] = b[k]
            # out[n, :, r0:r1] (K, L) += w (K, CFF) @ cols (CFF, L)
            gemm(False, False, K, (r1 - r0) * OW, CFF, &w[0, 0, 0, 0], CFF,
                 cols, (r1 - r0) * OW, 1, o, P)


def conv2d_backward(const floating[:, :, :, ::1] dout,  # IN (N, K, OH, OW)
                    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
                    const floating[:, :, :, ::1] w,  # IN (K, C, FH, FW)
                    floating[:, :, :, ::1] dx,  # OUT (N, C, H, W), zeroed by the caller
                    floating[:, ::1] dw,  # OUT (K, C * FH * FW)
                    floating[::1] db,  # OUT (K,)
                    Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW, int num_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = w.shape[0], FH = w.shape[2], FW = w.shape[3]
    cdef Py_ssize_t OH = dout.shape[2], OW = dout.shape[3], P = OH * OW, CFF = C * FH * FW
    cdef Py_ssize_t rows = rows_per_chunk(CFF, FH, SH, OH, OW, sizeof(floating))
    cdef Py_ssize_t blocks = (OH + rows - 1) // rows
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] scratch = np.empty((num_threads, 2 * CFF * rows * OW), dtype=dtype)
    # one weight-gradient slot per chunk, summed in a fixed order below
    cdef floating[:, :, ::1] partial = np.empty((N * blocks, K, CFF), dtype=dtype)
    cdef Py_ssize_t phase, per_image, j, n, block, r0, r1, L, k, i, c
    cdef floating *cols
    cdef floating *dcols
    cdef const floating *g
    cdef double acc
    for phase in range(2):
        per_image = (blocks - phase + 1) // 2
        with nogil, parallel(num_threads=num_threads):
            cols = &scratch[threadid(), 0]
            dcols = cols + CFF * rows * OW
            for j in prange(N * per_image, schedule='static'):
                n = j // per_image
                block = 2 * (j % per_image) + phase
                r0 = block * rows
                r1 = min(r0 + rows, OH)
                L = (r1 - r0) * OW
                g = &dout[n, 0, r0, 0]
                im2col_rows(&x[n, 0, 0, 0], C, H, W, FH, FW, SH, SW, PH, PW, OW, r0, r1, cols)
                # dW slot (K, CFF) = dout block (K, L) @ cols.T (L, CFF)
                gemm(False, True, K, CFF, L, g, P, cols, L, 0, &partial[n * blocks + block, 0, 0], CFF)
                # dcols (CFF, L) = w.T (CFF, K) @ dout block (K, L)
                gemm(True, False, CFF, L, K, &w[0, 0, 0, 0], CFF, g, P, 0, dcols, L)
                col2im_rows(dcols, C, H, W, FH, FW, SH, SW, PH, PW, OW, r0, r1, &dx[n, 0, 0, 0])
    with nogil:
        for k in prange(K, num_threads=num_threads, schedule='static'):
            for i in range(CFF):
                acc = 0
                for c in range(N * blocks):
                    acc = acc + partial[c, k, i]
                dw[k, i] = <floating>acc
            acc = 0
            for n in range(N):
                g = &dout[n, k, 0, 0]
                for i in range(P):
                    acc = acc + g[i]
            db[k] = <floating>acc
