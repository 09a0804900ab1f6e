"""Pooling kernels: max (the first maximum wins and its index is kept for backward),
average (padded zeros count, PyTorch's default) and L2 (the square root of the window's
sum of squares; padded zeros add nothing).

Max pooling has two kernels. Training's keeps the argmax of every window for backward,
with a branch per value. Inference's (max_pool2d_infer) writes the output alone, with a
compare and a select per value that the compiler vectorises (windows.pxd); a 2x2 pool of
stride 2 is one pass over pairs of rows. Both propagate NaN: a window holding a NaN gives
NaN, as torch.nn.functional.max_pool2d does. Both keep the first of tied values, so they
give the same bits (a NaN's payload aside).

The work is split over (image, channel) planes; each plane is one call of a C function,
so its locals are its thread's own. Within a plane the work is serial: the gradient scatter
of overlapping windows never races and never depends on the thread count.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY, sqrt

from windows cimport max_row, nan_max, valid_span

cdef extern from "pool2x2.h" nogil:
    void max2x2_argmax_row_f32(const float *r, Py_ssize_t W, Py_ssize_t base, Py_ssize_t n,
                               float *out, Py_ssize_t *argmax)
    void max2x2_argmax_row_f64(const double *r, Py_ssize_t W, Py_ssize_t base, Py_ssize_t n,
                               double *out, Py_ssize_t *argmax)

ctypedef enum Kind:
    AVG
    L2


cdef struct Geometry:
    Py_ssize_t H, W, OH, OW, FH, FW, SH, SW, PH, PW


cdef inline Geometry geometry(Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                              Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
                              Py_ssize_t PH, Py_ssize_t PW) noexcept nogil:
    cdef Geometry g
    g.H, g.W, g.OH, g.OW, g.FH, g.FW, g.SH, g.SW, g.PH, g.PW = H, W, OH, OW, FH, FW, SH, SW, PH, PW
    return g


cdef inline Py_ssize_t lo(Py_ssize_t o, Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    """First input row (or column) of window o, padding cut off."""
    return max(o * stride - pad, 0)


cdef inline Py_ssize_t hi(Py_ssize_t o, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t size,
                          Py_ssize_t n) noexcept nogil:
    """One past the last input row (or column) of window o, padding cut off."""
    return min(o * stride - pad + size, n)


cdef void max_plane(const floating *x, floating *out, Py_ssize_t *argmax,
                    Geometry g) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw, best_i
    cdef floating best, v
    if g.FH == 2 and g.FW == 2 and g.SW == 2 and g.PH == 0 and g.PW == 0:
        # the usual 2x2 pool, a row of windows at a time, vectorised (pool2x2.h)
        for oh in range(g.OH):
            ih = oh * g.SH
            if floating is float:
                max2x2_argmax_row_f32(x + ih * g.W, g.W, ih * g.W, g.OW, out + oh * g.OW,
                                      argmax + oh * g.OW)
            else:
                max2x2_argmax_row_f64(x + ih * g.W, g.W, ih * g.W, g.OW, out + oh * g.OW,
                                      argmax + oh * g.OW)
        return
    for oh in range(g.OH):
        for ow in range(g.OW):
            best_i = lo(oh, g.SH, g.PH) * g.W + lo(ow, g.SW, g.PW)
            best = x[best_i]
            for ih in range(lo(oh, g.SH, g.PH), hi(oh, g.SH, g.PH, g.FH, g.H)):
                for iw in range(lo(ow, g.SW, g.PW), hi(ow, g.SW, g.PW, g.FW, g.W)):
                    v = x[ih * g.W + iw]
                    # strictly greater: the first maximum wins; a NaN wins and stays
                    if v > best or (v != v and best == best):
                        best = v
                        best_i = ih * g.W + iw
            out[oh * g.OW + ow] = best
            argmax[oh * g.OW + ow] = best_i


cdef void max_plane_infer(const floating *x, floating *out, Geometry g) noexcept nogil:
    """The window maxima of one plane, without argmax; padding never wins (it is -inf)."""
    cdef Py_ssize_t oh, ih, j, t, a, b
    cdef const floating *src
    cdef floating *o
    for oh in range(g.OH):
        o = out + oh * g.OW
        if g.PH == 0 and g.PW == 0:
            max_row(x + oh * g.SH * g.W, g.W, g.FH, g.FW, g.SW, g.OW, o)
            continue
        for t in range(g.OW):
            o[t] = -INFINITY
        # tap by tap over the whole output row: the columns a tap reads inside the
        # image are one span, so the inner loop has no bounds test
        for ih in range(lo(oh, g.SH, g.PH), hi(oh, g.SH, g.PH, g.FH, g.H)):
            for j in range(g.FW):
                valid_span(g.OW, g.W, g.SW, j - g.PW, &a, &b)
                src = x + ih * g.W + a * g.SW + j - g.PW
                if g.SW == 1:
                    for t in range(b - a):
                        o[a + t] = nan_max(o[a + t], src[t])
                else:
                    for t in range(b - a):
                        o[a + t] = nan_max(o[a + t], src[t * g.SW])


cdef void sum_plane(const floating *x, floating *out, Kind kind, Geometry g) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw
    cdef floating acc, v
    for oh in range(g.OH):
        for ow in range(g.OW):
            acc = 0
            for ih in range(lo(oh, g.SH, g.PH), hi(oh, g.SH, g.PH, g.FH, g.H)):
                for iw in range(lo(ow, g.SW, g.PW), hi(ow, g.SW, g.PW, g.FW, g.W)):
                    v = x[ih * g.W + iw]
                    acc += v * v if kind == L2 else v
            out[oh * g.OW + ow] = sqrt(acc) if kind == L2 else acc / (g.FH * g.FW)


cdef void sum_plane_backward(const floating *dout, const floating *x, const floating *out,
                             floating *dx, Kind kind, Geometry g) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw
    cdef floating scale
    for oh in range(g.OH):
        for ow in range(g.OW):
            if kind == AVG:
                scale = dout[oh * g.OW + ow] / (g.FH * g.FW)
            elif out[oh * g.OW + ow] == 0:
                continue  # an all-zero L2 window: the subgradient 0, never 0 / 0
            else:
                scale = dout[oh * g.OW + ow] / out[oh * g.OW + ow]
            for ih in range(lo(oh, g.SH, g.PH), hi(oh, g.SH, g.PH, g.FH, g.H)):
                for iw in range(lo(ow, g.SW, g.PW), hi(ow, g.SW, g.PW, g.FW, g.W)):
                    dx[ih * g.W + iw] += scale if kind == AVG else scale * x[ih * g.W + iw]


def max_pool2d_forward(const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
                       floating[:, :, :, ::1] out,  # OUT (N, C, OH, OW)
                       Py_ssize_t[:, :, :, ::1] argmax,  # OUT (N, C, OH, OW): h * W + w
                       Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
                       Py_ssize_t PH, Py_ssize_t PW, int num_threads):
    cdef Py_ssize_t C = x.shape[1], p
    cdef Geometry g = geometry(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                               FH, FW, SH, SW, PH, PW)
    with nogil:
        for p in prange(x.shape[0] * C, num_threads=num_threads, schedule='static'):
            max_plane(&x[p // C, p % C, 0, 0], &out[p // C, p % C, 0, 0],
                      &argmax[p // C, p % C, 0, 0], g)


def max_pool2d_infer(const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
                     floating[:, :, :, ::1] out,  # OUT (N, C, OH, OW)
                     Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
                     Py_ssize_t PH, Py_ssize_t PW, int num_threads):
    cdef Py_ssize_t C = x.shape[1], p
    cdef Geometry g = geometry(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                               FH, FW, SH, SW, PH, PW)
    with nogil:
        for p in prange(x.shape[0] * C, num_threads=num_threads, schedule='static'):
            max_plane_infer(&x[p // C, p % C, 0, 0], &out[p // C, p % C, 0, 0], g)


def max_pool2d_backward(const floating[:, :, :, ::1] dout,  # IN (N, C, OH, OW)
                        const Py_ssize_t[:, :, :, ::1] argmax,  # IN (N, C, OH, OW)
                        floating[:, :, :, ::1] dx,  # OUT (N, C, H, W)
                        int num_threads):
    # each plane is zeroed, then takes its gradients, while it is in the core's cache
    cdef Py_ssize_t C = dx.shape[1], P = dout.shape[2] * dout.shape[3], p, i
    cdef Py_ssize_t HW = dx.shape[2] * dx.shape[3]
    cdef floating *d
    cdef const floating *g
    cdef const Py_ssize_t *a
    with nogil:
        for p in prange(dx.shape[0] * C, num_threads=num_threads, schedule='static'):
            d = &dx[p // C, p % C, 0, 0]
            g = &dout[p // C, p % C, 0, 0]
            a = &argmax[p // C, p % C, 0, 0]
            for i in range(HW):
                d[i] = 0
            for i in range(P):
                d[a[i]] += g[i]


def sum_pool2d_forward(const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
                       floating[:, :, :, ::1] out,  # OUT (N, C, OH, OW)
                       bint l2,  # L2 pooling if true, else average pooling
                       Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
                       Py_ssize_t PH, Py_ssize_t PW, int num_threads):
    cdef Kind kind = L2 if l2 else AVG
    cdef Py_ssize_t C = x.shape[1], p
    cdef Geometry g = geometry(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                               FH, FW, SH, SW, PH, PW)
    with nogil:
        for p in prange(x.shape[0] * C, num_threads=num_threads, schedule='static'):
            sum_plane(&x[p // C, p % C, 0, 0], &out[p // C, p % C, 0, 0], kind, g)


def sum_pool2d_backward(const floating[:, :, :, ::1] dout,  # IN (N, C, OH, OW)
                        const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
                        const floating[:, :, :, ::1] out,  # IN (N, C, OH, OW): the forward's
                        floating[:, :, :, ::1] dx,  # OUT (N, C, H, W), zeroed by the caller
                        bint l2,  # L2 pooling if true, else average pooling
                        Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t SH, Py_ssize_t SW,
                        Py_ssize_t PH, Py_ssize_t PW, int num_threads):
    cdef Kind kind = L2 if l2 else AVG
    cdef Py_ssize_t C = x.shape[1], p
    cdef Geometry g = geometry(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                               FH, FW, SH, SW, PH, PW)
    with nogil:
        for p in prange(x.shape[0] * C, num_threads=num_threads, schedule='static'):
            sum_plane_backward(&dout[p // C, p % C, 0, 0], &x[p // C, p % C, 0, 0],
                               &out[p // C, p % C, 0, 0], &dx[p // C, p % C, 0, 0], kind, g)
