"""Direct convolution for inference, float32, stride 1: for layers with few input channels.

Each register block holds four vectors of outputs for a few filters while every tap of the
filters adds its weight times a vector of input read in place (see direct_body.h); there is
no im2col copy. The output stage adds the bias and applies the ReLU and a 2x2 max-pool, as
conv2d_infer does. Chunks (image, run of output rows) depend on the shapes only, never on the
thread count, so results are bit-identical for any number of threads.
"""
import numpy as np

from cython.parallel cimport parallel, prange, threadid

cdef extern from "direct.h" nogil:
    ctypedef void (*direct_chunk_fn)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                     Py_ssize_t, Py_ssize_t, const float *, Py_ssize_t,
                                     Py_ssize_t, Py_ssize_t, const float *, int, int,
                                     Py_ssize_t, Py_ssize_t, Py_ssize_t, float *, Py_ssize_t,
                                     Py_ssize_t, float *) noexcept
    direct_chunk_fn direct_chunk
    const char *direct_isa
    void direct_select()
    Py_ssize_t direct_unit_rows(int q, Py_ssize_t OWu)
    Py_ssize_t DIRECT_ROW_FLOATS(Py_ssize_t OWu, Py_ssize_t FW)

direct_select()

# Output units (rows, or pairs of rows with the pool) per chunk: the chunk's input rows are
# copied once for them, FH - 1 rows over.
cdef Py_ssize_t UNITS = 8

# The pools its output stage takes: none (1) and 2x2.
POOLS = (1, 2)


def instruction_set():
    """The copy of the kernel this CPU runs: "avx512", "avx2" or "baseline"."""
    return direct_isa.decode()


def direct_infer(const float[:, :, :, ::1] x,  # IN (N, C, H, W)
                 const float[:, :, :, ::1] w,  # IN (K, C, FH, FW)
                 const float[::1] b,  # IN (K,)
                 float[:, :, :, ::1] out,  # OUT (N, K, OH // q, OW // q)
                 Py_ssize_t PH, Py_ssize_t PW, bint apply_relu, int q, int num_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = w.shape[0], FH = w.shape[2], FW = w.shape[3]
    cdef Py_ssize_t OHo = out.shape[2], OWo = out.shape[3], OWu = OWo * q
    # a unit: one output row (q = 1), two rows pooled into one (q = 2), or a pair of narrow
    # rows; units of pairs hold two rows of out, the last perhaps one
    cdef Py_ssize_t per = direct_unit_rows(q, OWu), units = OHo if per == q else (OHo + 1) // 2
    cdef Py_ssize_t per_image = (units + UNITS - 1) // UNITS
    cdef Py_ssize_t rows = UNITS * per + FH - 1
    cdef float[:, ::1] scratch = np.empty((num_threads, C * rows * DIRECT_ROW_FLOATS(OWu, FW) + 16),
                                          dtype=np.float32)
    cdef Py_ssize_t chunk, img, u0, offset
    cdef float *s
    if N == 0 or K == 0 or OHo == 0 or OWo == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        s = &scratch[threadid(), 0]
        offset = (<size_t>s // 4) % 16
        s = s + (16 - offset) % 16
        for chunk in prange(N * per_image, schedule='static'):
            img = chunk // per_image
            u0 = chunk % per_image * UNITS
            direct_chunk(&x[img, 0, 0, 0], C, H, W, PH, PW, &w[0, 0, 0, 0], K, FH, FW, &b[0],
                         apply_relu, q, u0, min(UNITS, units - u0), OWu, &out[img, 0, 0, 0],
                         OHo, OWo, s)
