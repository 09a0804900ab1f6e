# Window arithmetic and the inference max, shared by the conv and pool kernels.
#
# The max propagates NaN, as torch.nn.functional.max_pool2d does: a window holding a NaN
# gives NaN. It is a compare and a select, with no branch, so loops over it vectorise.
from cython cimport floating


cdef inline void valid_span(Py_ssize_t n_out, Py_ssize_t n_in, Py_ssize_t stride,
                            Py_ssize_t offset, Py_ssize_t *lo, Py_ssize_t *hi) noexcept nogil:
    """Outputs o in [lo, hi) read input o * stride + offset inside [0, n_in)."""
    lo[0] = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi[0] = 0 if n_in - 1 - offset < 0 else min(n_out, (n_in - 1 - offset) // stride + 1)
    if lo[0] > hi[0]:
        lo[0] = hi[0]


cdef inline floating nan_max(floating best, floating v) noexcept nogil:
    """v if it is larger or NaN, else best: ties keep the first, a NaN stays once in."""
    return v if (v > best) | (v != v) else best


cdef inline floating relu(floating v) noexcept nogil:
    """max(v, 0); NaN passes through, as in PyTorch."""
    return v if (v > 0) | (v != v) else 0


cdef inline void max_row(const floating *src, Py_ssize_t W, Py_ssize_t FH, Py_ssize_t FW,
                         Py_ssize_t SW, Py_ssize_t n, floating *dst) noexcept nogil:
    """dst[t] = max of src[i * W + t * SW + j] over the window i < FH, j < FW, for t < n.

    Every window lies inside src (no padding). Values are visited in row-major order.
    """
    cdef Py_ssize_t t, i, j
    cdef const floating *s
    if FH == 2 and FW == 2 and SW == 2:  # the usual 2x2 pool: one pass, pairs of columns
        for t in range(n):
            dst[t] = nan_max(nan_max(nan_max(src[2 * t], src[2 * t + 1]), src[W + 2 * t]),
                             src[W + 2 * t + 1])
        return
    for t in range(n):
        dst[t] = src[t * SW]
    for i in range(FH):
        for j in range(FW):
            if i == 0 and j == 0:
                continue
            s = src + i * W + j
            if SW == 1:
                for t in range(n):
                    dst[t] = nan_max(dst[t], s[t])
            else:
                for t in range(n):
                    dst[t] = nan_max(dst[t], s[t * SW])
