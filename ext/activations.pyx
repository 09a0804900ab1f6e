"""Elementwise ReLU and the softmax cross-entropy loss."""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, log


def relu_forward(const floating[::1] x, floating[::1] out, int num_threads):
    cdef Py_ssize_t i
    cdef floating v
    with nogil:
        for i in prange(x.shape[0], num_threads=num_threads, schedule='static'):
            v = x[i]
            out[i] = v if (v > 0 or v != v) else 0  # NaN passes through, as in PyTorch


def relu_backward(const floating[::1] dout, const floating[::1] x, floating[::1] dx,
                  int num_threads):
    cdef Py_ssize_t i
    cdef floating g, v
    with nogil:
        for i in prange(x.shape[0], num_threads=num_threads, schedule='static'):
            # both loaded, then a select that vectorises: a branch on the sign mispredicts
            # on random signs (803k values: 3.5 ms with the branch, 0.1 ms without)
            g, v = dout[i], x[i]
            dx[i] = g if v > 0 else 0


def softmax_cross_entropy(const floating[:, ::1] scores,  # IN (N, M)
                          const Py_ssize_t[::1] labels,  # IN (N,), each in [0, M)
                          floating[:, ::1] dscores,  # OUT (N, M): d(mean loss) / d(scores)
                          int num_threads):
    """Return the mean over the batch of -log softmax(scores)[label]."""
    cdef Py_ssize_t N = scores.shape[0], M = scores.shape[1], i, j
    cdef double top, total, inv_n = 1.0 / N, loss = 0
    cdef double[::1] row_loss = np.empty(N)
    with nogil:
        for i in prange(N, num_threads=num_threads, schedule='static'):
            top = scores[i, 0]
            for j in range(1, M):
                if scores[i, j] > top:
                    top = scores[i, j]
            total = 0
            for j in range(M):
                total = total + exp(scores[i, j] - top)
            for j in range(M):
                dscores[i, j] = <floating>(exp(scores[i, j] - top) / total * inv_n)
            dscores[i, labels[i]] -= <floating>inv_n
            row_loss[i] = log(total) - (scores[i, labels[i]] - top)
        for i in range(N):  # a fixed order, so the loss is the same for any thread count
            loss += row_loss[i]
    return loss * inv_n

