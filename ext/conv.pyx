"""Convolution kernels: im2col of a block of output rows into per-thread scratch, then a GEMM.

Training's float32 GEMMs run on our own micro-kernel (sgemm.h: AVX-512, AVX2 or the
baseline, picked at run time), float64 and inference on OpenBLAS. Backward sums each weight
gradient over a fixed group of blocks in one slot, then the slots in a fixed order.

The work is cut into chunks (image, block of output rows) whose bounds depend only on the
shapes, never on the thread count, so the results are bit-identical for any number of
threads. Blocks are sized for the GEMM (see blocks_per_image), and the columns of one chunk stay in
a core's cache between im2col writing them and BLAS reading them.

Training (conv2d_forward, conv2d_backward) and inference (conv2d_infer) share im2col. The
inference kernel finishes each block while the GEMM's output is still in cache: it adds the
bias, applies the ReLU, and may max-pool the block in windows that tile it (blocks are then
whole rows of pool windows), so that the full-size output is never written. Bias is added
after the GEMM there and before it in training: the two differ by rounding only (float32:
a few ulps of the largest partial sum). Max and ReLU commute with adding the bias (rounding
is monotone), so the pool takes the max first and adds the bias to the winner only.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid

from blas cimport gemm
from sgemm cimport SGEMM_ACCUMULATE, SGEMM_BIAS, SGEMM_ZERO, sgemm, sgemm_use_isa
from windows cimport max_row, relu, valid_span

cdef extern from "spans.h" nogil:
    void spans_init()
    void span_copy_f32(float *d, const float *s, Py_ssize_t n)

# Training: the columns of one chunk (and backward's column gradient) stay within a core's
# L2 cache (2 MiB here).
cdef Py_ssize_t COLS_BUDGET_BYTES = 1 << 19
# Slots for the weight gradient's partial sums in each backward phase: a constant, so that
# the sums' order is fixed by the shapes alone, and enough groups of blocks to share out.
cdef Py_ssize_t WEIGHT_GROUPS = 16
# Inference: OpenBLAS multiplies small matrices without packing them (M * N * K <= 1e6 on
# current x86 cores), which runs ~30% faster than the packed path on 16-32 filters.
cdef Py_ssize_t GEMM_SMALL_MNK = 1000000
# Inference, GEMMs too large for that path: the columns of one chunk up to 2 MiB (measured
# on the shipped net's conv2 and fc1 at 512 and 1024 pixels: within 3% of the best block).
cdef Py_ssize_t INFER_COLS_BYTES = 1 << 21


cpdef Py_ssize_t infer_blocks_per_image(Py_ssize_t k, Py_ssize_t cff, Py_ssize_t units,
                                        Py_ssize_t qh, Py_ssize_t ow, Py_ssize_t itemsize) noexcept:
    """How many blocks one image's ``units`` rows of pool windows (each ``qh`` output rows of
    ``ow`` columns; qh = 1 without a pool) are cut into, for k filters over cff inputs."""
    cdef Py_ssize_t rows = GEMM_SMALL_MNK // (k * cff * ow)
    if rows == 0:
        # too large for the unpacked GEMM even at one row: OpenBLAS packs, and bigger GEMMs
        # amortise that (the shipped net's fc1 at 512x512: 16% faster at 5 rows than at 1)
        rows = INFER_COLS_BYTES // (cff * ow * itemsize)
    cdef Py_ssize_t per_block = max(rows // qh, 1)
    return (units + per_block - 1) // per_block


cpdef Py_ssize_t blocks_per_image(Py_ssize_t k, Py_ssize_t cff, Py_ssize_t fh, Py_ssize_t sh,
                                  Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t itemsize,
                                  bint backward) noexcept:
    """How many blocks of output rows one image is cut into, for k filters over cff inputs
    (training)."""
    cdef Py_ssize_t rows = COLS_BUDGET_BYTES // (cff * ow * itemsize)
    cdef Py_ssize_t blocks = (oh + max(rows, 1) - 1) // max(rows, 1)
    cdef Py_ssize_t least
    if backward:
        # backward scatters even blocks, then odd ones; blocks two apart must touch
        # disjoint input rows, which holds when every block has (rows + 1) * sh >= fh
        least = max((fh + sh - 1) // sh - 1, 1)
        blocks = min(blocks, max(oh // least, 1))
    return blocks


cdef inline Py_ssize_t block_start(Py_ssize_t block, Py_ssize_t blocks, Py_ssize_t oh) noexcept nogil:
    """First output row of a block: sizes differ by one at most, so the GEMMs are alike."""
    return block * oh // blocks


cdef void im2col_rows(const floating *x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                      Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
                      Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t OW, Py_ssize_t r0, Py_ssize_t r1,
                      floating *cols) noexcept nogil:
    """cols[(c, i, j), (oh - r0) * OW + ow] = x[c, oh*SH - PH + i, ow*SW - PW + j], 0 in the padding."""
    # Rows are often only a few floats long: plain loops, which the compiler vectorises,
    # cost far less here than a memcpy/memset call per row.
    cdef Py_ssize_t L = (r1 - r0) * OW
    cdef Py_ssize_t c, i, j, oh, t, ih, lo, hi
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
                        for t in range(OW):
                            dst[t] = 0
                    else:
                        for t in range(lo):
                            dst[t] = 0
                        src = x + (c * H + ih) * W + lo * SW + j - PW
                        if SW == 1:
                            if floating is float:
                                span_copy_f32(dst + lo, src, hi - lo)
                            else:
                                for t in range(hi - lo):
                                    dst[lo + t] = src[t]
                        else:
                            for t in range(hi - lo):
                                dst[lo + t] = src[t * SW]
                        for t in range(hi, OW):
                            dst[t] = 0
                    dst += OW


cdef void col2im_rows(const floating *cols, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                      Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
                      Py_ssize_t PH, Py_ssize_t PW, Py_ssize_t OW, Py_ssize_t r0, Py_ssize_t r1,
                      floating *dx) noexcept nogil:
    """The adjoint of im2col_rows: add every column entry back to the pixel it came from."""
    cdef Py_ssize_t L = (r1 - r0) * OW
    cdef Py_ssize_t c, i, j, oh, t, ih, lo, hi
    cdef const floating *src
    cdef floating *dst
    for c in range(C):
        for i in range(FH):
            for j in range(FW):
                valid_span(OW, W, SW, j - PW, &lo, &hi)
                src = cols + ((c * FH + i) * FW + j) * L + lo
                for oh in range(r0, r1):
                    ih = oh * SH - PH + i
                    if 0 <= ih < H:
                        dst = dx + (c * H + ih) * W + lo * SW + j - PW
                        if SW == 1:
                            for t in range(hi - lo):
                                dst[t] += src[t]
                        else:
                            for t in range(hi - lo):
                                dst[t * SW] += src[t]
                    src += OW


def conv2d_forward(const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
                   const floating[:, :, :, ::1] w,  # IN (K, C, FH, FW)
                   const floating[::1] b,  # IN (K,)
                   floating[:, :, :, ::1] out,  # OUT (N, K, OH, OW)
                   Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW, int num_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = w.shape[0], FH = w.shape[2], FW = w.shape[3]
    cdef Py_ssize_t OH = out.shape[2], OW = out.shape[3], P = OH * OW, CFF = C * FH * FW
    cdef Py_ssize_t blocks = blocks_per_image(K, CFF, FH, SH, OH, OW, sizeof(floating), False)
    cdef Py_ssize_t rows = (OH + blocks - 1) // blocks  # the most rows of any block
    cdef floating[:, ::1] scratch = np.empty(
        (num_threads, CFF * rows * OW), dtype=np.float32 if floating is float else np.float64)
    cdef Py_ssize_t chunk, n, r0, r1, k, i
    cdef floating *cols
    cdef floating *o
    with nogil, parallel(num_threads=num_threads):
        cols = &scratch[threadid(), 0]
        for chunk in prange(N * blocks, schedule='static'):
            n = chunk // blocks
            r0 = block_start(chunk % blocks, blocks, OH)
            r1 = block_start(chunk % blocks + 1, blocks, OH)
            im2col_rows(&x[n, 0, 0, 0], C, H, W, FH, FW, SH, SW, PH, PW, OW, r0, r1, cols)
            o = &out[n, 0, r0, 0]
            # out[n, :, r0:r1] (K, L) = b + w (K, CFF) @ cols (CFF, L)
            if floating is float:
                sgemm(K, (r1 - r0) * OW, CFF, &w[0, 0, 0, 0], CFF, 1, cols, (r1 - r0) * OW,
                      o, P, SGEMM_BIAS, &b[0])
            else:
                for k in range(K):
                    for i in range((r1 - r0) * OW):
                        o[k * P + i] = b[k]
                gemm(False, False, K, (r1 - r0) * OW, CFF, &w[0, 0, 0, 0], CFF,
                     cols, (r1 - r0) * OW, 1, o, P)


cdef void bias_relu_rows(floating *o, Py_ssize_t K, Py_ssize_t L, Py_ssize_t P,
                         const floating *b, bint apply_relu) noexcept nogil:
    """o[k * P + i] += b[k] for i < L, then the ReLU: one block's output stage, in cache."""
    cdef Py_ssize_t k, i
    cdef floating bk
    cdef floating *p
    for k in range(K):
        p, bk = o + k * P, b[k]
        if apply_relu:
            for i in range(L):
                p[i] = relu(p[i] + bk)
        else:
            for i in range(L):
                p[i] = p[i] + bk


cdef void pool_bias_relu_rows(const floating *y, Py_ssize_t K, Py_ssize_t units,
                              Py_ssize_t QH, Py_ssize_t QW, Py_ssize_t OWu, floating *o,
                              Py_ssize_t OWq, Py_ssize_t Pq, const floating *b,
                              bint apply_relu) noexcept nogil:
    """o[k * Pq + u * OWq + t] = relu(max of y's QH x QW window (u, t) of filter k + b[k]):
    y (K, units * QH, OWu) is one block's GEMM output."""
    cdef Py_ssize_t k, u, t
    cdef floating bk
    cdef floating *p
    for k in range(K):
        bk = b[k]
        for u in range(units):
            p = o + k * Pq + u * OWq
            max_row(y + (k * units + u) * QH * OWu, OWu, QH, QW, QW, OWq, p)
            if apply_relu:
                for t in range(OWq):
                    p[t] = relu(p[t] + bk)
            else:
                for t in range(OWq):
                    p[t] = p[t] + bk


def conv2d_infer(const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
                 const floating[:, :, :, ::1] w,  # IN (K, C, FH, FW)
                 const floating[::1] b,  # IN (K,)
                 floating[:, :, :, ::1] out,  # OUT (N, K, OH // QH, OW // QW)
                 Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW,
                 Py_ssize_t OH, Py_ssize_t OW,  # IN the convolution's output size
                 bint apply_relu, Py_ssize_t QH, Py_ssize_t QW,  # QHxQW max-pool, 1x1: none
                 int num_threads):
    """The convolution's output alone: bias, then ReLU and a max-pool of stride = size if
    asked, fused into the output stage of each block."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = w.shape[0], FH = w.shape[2], FW = w.shape[3], CFF = C * FH * FW
    cdef bint pooled = QH > 1 or QW > 1
    # a pool reads whole windows: the rows and columns left over are never computed
    cdef Py_ssize_t units = OH // QH, OWq = OW // QW, OWu = OWq * QW, Pq = out.shape[2] * OWq
    cdef Py_ssize_t blocks = infer_blocks_per_image(K, CFF, units, QH, OWu, sizeof(floating))
    cdef Py_ssize_t rows = (units + blocks - 1) // blocks * QH  # the most output rows of any block
    cdef floating[:, ::1] scratch = np.empty(
        (num_threads, (CFF + (K if pooled else 0)) * rows * OWu),
        dtype=np.float32 if floating is float else np.float64)
    cdef Py_ssize_t chunk, n, u0, u1, r0, r1, L
    cdef floating *cols
    cdef floating *y
    with nogil, parallel(num_threads=num_threads):
        cols = &scratch[threadid(), 0]
        y = cols + CFF * rows * OWu
        for chunk in prange(N * blocks, schedule='static'):
            n = chunk // blocks
            u0 = block_start(chunk % blocks, blocks, units)
            u1 = block_start(chunk % blocks + 1, blocks, units)
            r0, r1 = u0 * QH, u1 * QH
            L = (r1 - r0) * OWu
            im2col_rows(&x[n, 0, 0, 0], C, H, W, FH, FW, SH, SW, PH, PW, OWu, r0, r1, cols)
            if pooled:
                # y (K, L) = w (K, CFF) @ cols (CFF, L), then pooled into out[n, :, u0:u1]
                gemm(False, False, K, L, CFF, &w[0, 0, 0, 0], CFF, cols, L, 0, y, L)
                pool_bias_relu_rows(y, K, u1 - u0, QH, QW, OWu, &out[n, 0, u0, 0], OWq, Pq,
                                    &b[0], apply_relu)
            else:
                # out[n, :, r0:r1] (K, L) = w (K, CFF) @ cols (CFF, L), finished in place
                gemm(False, False, K, L, CFF, &w[0, 0, 0, 0], CFF, cols, L, 0,
                     &out[n, 0, r0, 0], Pq)
                bias_relu_rows(&out[n, 0, r0, 0], K, L, Pq, &b[0], apply_relu)


cdef void transpose_block(const floating *g, Py_ssize_t K, Py_ssize_t L, Py_ssize_t P,
                          floating *gt) noexcept nogil:
    """gt (L, K) = g (K, L) transposed, g's rows P apart: the weight gradient's B operand.
    Written in order, each of the K rows of g read in order."""
    cdef Py_ssize_t k, i
    for i in range(L):
        for k in range(K):
            gt[i * K + k] = g[k * P + i]


cdef void weight_gradient(const floating *cols, const floating *g, Py_ssize_t CFF, Py_ssize_t K,
                          Py_ssize_t L, Py_ssize_t P, floating *gt, floating *slot,
                          bint accumulate) noexcept nogil:
    """slot (CFF, K) (+)= cols (CFF, L) @ dout block.T (L, K), the block's rows P apart."""
    if floating is float:
        transpose_block(g, K, L, P, gt)
        sgemm(CFF, K, L, cols, L, 1, gt, K, slot, K,
              SGEMM_ACCUMULATE if accumulate else SGEMM_ZERO, NULL)
    else:
        # this orientation runs ~1.5x faster in OpenBLAS than dout block @ cols.T
        gemm(False, True, CFF, K, L, cols, L, g, P, 1 if accumulate else 0, slot, K)


cdef double plane_sum(const floating *g, Py_ssize_t N, Py_ssize_t stride, Py_ssize_t P) noexcept nogil:
    """The sum of N planes of P values, stride apart, in double: eight running sums (a chain
    of dependent adds would wait on each one), combined in a fixed order."""
    cdef double lanes[8]
    cdef Py_ssize_t n, i, t
    for t in range(8):
        lanes[t] = 0
    for n in range(N):
        for i in range(0, P - 7, 8):
            for t in range(8):
                lanes[t] += g[n * stride + i + t]
        for i in range(P - P % 8, P):
            lanes[i % 8] += g[n * stride + i]
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))


def conv2d_backward(const floating[:, :, :, ::1] dout,  # IN (N, K, OH, OW)
                    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
                    const floating[:, :, :, ::1] w,  # IN (K, C, FH, FW)
                    floating[:, :, :, ::1] dx,  # OUT (N, C, H, W), zeroed by the caller; None: skip
                    floating[:, ::1] dw,  # OUT (K, C * FH * FW); None: skip
                    floating[::1] db,  # OUT (K,)
                    Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW, int num_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = w.shape[0], FH = w.shape[2], FW = w.shape[3]
    cdef Py_ssize_t OH = dout.shape[2], OW = dout.shape[3], P = OH * OW, CFF = C * FH * FW
    cdef bint input_grad = dx is not None, weight_grad = dw is not None
    cdef Py_ssize_t blocks = blocks_per_image(K, CFF, FH, SH, OH, OW, sizeof(floating), True)
    cdef Py_ssize_t rows = (OH + blocks - 1) // blocks  # the most rows of any block
    # even blocks scatter their dx first, then odd ones (see blocks_per_image); without dx
    # too, so that dw and db are the same bits either way
    cdef Py_ssize_t phases = 2 if blocks > 1 else 1
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] scratch = np.empty(
        (num_threads, (2 * CFF + K) * rows * OW), dtype=dtype)
    # one slot per group of blocks for the transposed weight gradient, summed in a fixed
    # order below; groups are fixed by the shapes, never by the thread count
    cdef floating[:, :, ::1] partial = np.empty((phases * WEIGHT_GROUPS, CFF, K), dtype=dtype)
    cdef Py_ssize_t[::1] used = np.zeros(phases, dtype=np.intp)
    cdef Py_ssize_t phase, per_image, units, groups, group, j, n, block, r0, r1, L, k, i, c
    cdef floating *cols
    cdef floating *dcols
    cdef floating *gt
    cdef floating *slot
    cdef const floating *g
    for phase in range(phases if input_grad or weight_grad else 0):
        per_image = (blocks - phase + phases - 1) // phases
        units = N * per_image
        groups = min(units, WEIGHT_GROUPS)
        used[phase] = groups
        with nogil, parallel(num_threads=num_threads):
            cols = &scratch[threadid(), 0]
            dcols = cols + CFF * rows * OW
            gt = dcols + CFF * rows * OW
            for group in prange(groups, schedule='static'):
                slot = &partial[phase * WEIGHT_GROUPS + group, 0, 0]
                for j in range(group * units // groups, (group + 1) * units // groups):
                    n = j // per_image
                    block = phases * (j % per_image) + phase
                    r0 = block_start(block, blocks, OH)
                    r1 = block_start(block + 1, blocks, OH)
                    L = (r1 - r0) * OW
                    g = &dout[n, 0, r0, 0]
                    if weight_grad:
                        im2col_rows(&x[n, 0, 0, 0], C, H, W, FH, FW, SH, SW, PH, PW, OW, r0, r1, cols)
                        weight_gradient(cols, g, CFF, K, L, P, gt, slot,
                                        j > group * units // groups)
                    if input_grad:
                        # dcols (CFF, L) = w.T (CFF, K) @ dout block (K, L)
                        if floating is float:
                            sgemm(CFF, L, K, &w[0, 0, 0, 0], 1, CFF, g, P, dcols, L, SGEMM_ZERO, NULL)
                        else:
                            gemm(True, False, CFF, L, K, &w[0, 0, 0, 0], CFF, g, P, 0, dcols, L)
                        col2im_rows(dcols, C, H, W, FH, FW, SH, SW, PH, PW, OW, r0, r1,
                                    &dx[n, 0, 0, 0])
    # fixed-order sums, each thread over its own rows of the contiguous partials
    cdef double[:, ::1] total = np.zeros((CFF if weight_grad else 0, K))
    with nogil:
        for i in prange(CFF if weight_grad else 0, num_threads=num_threads, schedule='static'):
            for phase in range(phases):
                for c in range(used[phase]):
                    for k in range(K):
                        total[i, k] += partial[phase * WEIGHT_GROUPS + c, i, k]
            for k in range(K):
                dw[k, i] = <floating>total[i, k]
        for k in prange(K, num_threads=num_threads, schedule='static'):
            db[k] = <floating>plane_sum(&dout[0, k, 0, 0], N, K * P, P)



def sgemm_instruction_set(int isa=-1):
    """Run training's float32 GEMM on instruction set ``isa`` from now on (0: the build's
    baseline, 1: AVX2 with FMA, 2: AVX-512; -1, or more than the CPU has: the best it has)
    and return the one in use. For tests, which run every kernel on each."""
    return sgemm_use_isa(isa)


sgemm_use_isa(-1)
spans_init()
