"""Naive NumPy references for the layers: loops over output positions, written for clarity.

They share no code with the kernels (nor with detector.shapes), so agreement means something.
"""
import numpy as np


def out_size(n, f, p, s):
    return (n + 2 * p - f) // s + 1


def conv2d(x, w, b, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    k, _, fh, fw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = out_size(x.shape[2], fh, ph, sh), out_size(x.shape[3], fw, pw, sw)
    out = np.empty((x.shape[0], k, oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            window = xp[:, :, i * sh:i * sh + fh, j * sw:j * sw + fw]
            out[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out


def pool2d(x, kind, size, stride, padding):
    """kind: "max" (pads with -inf), "avg" (padded zeros count) or "l2"."""
    (fh, fw), (sh, sw), (ph, pw) = size, stride, padding
    fill = -np.inf if kind == "max" else 0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    oh, ow = out_size(x.shape[2], fh, ph, sh), out_size(x.shape[3], fw, pw, sw)
    out = np.empty(x.shape[:2] + (oh, ow), x.dtype)
    for i in range(oh):
        for j in range(ow):
            window = xp[:, :, i * sh:i * sh + fh, j * sw:j * sw + fw]
            if kind == "max":
                out[:, :, i, j] = window.max(axis=(2, 3))
            elif kind == "avg":
                out[:, :, i, j] = window.sum(axis=(2, 3)) / (fh * fw)
            else:
                out[:, :, i, j] = np.sqrt((window * window).sum(axis=(2, 3)))
    return out


def linear(x, w, b):
    return np.array([[x[n] @ w[m] + b[m] for m in range(w.shape[0])] for n in range(x.shape[0])],
                    dtype=x.dtype)


def softmax_cross_entropy(scores, labels):
    s = scores.astype(np.float64)
    s = s - s.max(axis=1, keepdims=True)
    log_probs = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels].mean()


def numerical_gradient(f, x, h=1e-6):
    """Central differences of the scalar f() with respect to every entry of x (in place)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def relative_error(a, b):
    """||a - b|| / (||a|| + ||b||), 0 when both are 0."""
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def conv2d_backward(x, w, dout, stride, padding):
    """dx, dw, db of conv2d by looping over output positions (for shapes too big for
    a numerical gradient)."""
    (sh, sw), (ph, pw) = stride, padding
    _, _, fh, fw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            rows, cols = slice(i * sh, i * sh + fh), slice(j * sw, j * sw + fw)
            g = dout[:, :, i, j]  # (N, K)
            dw += np.tensordot(g, xp[:, :, rows, cols], axes=([0], [0]))
            dxp[:, :, rows, cols] += np.tensordot(g, w, axes=([1], [0]))
    dx = dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]
    return dx, dw, dout.sum(axis=(0, 2, 3))
