"""Shape arithmetic shared by the layers and the model: (h, w) pairs and output sizes."""
import numbers


def pair(value, name, minimum):
    """``(h, w)`` from an int or a pair of ints, each at least ``minimum``."""
    items = value if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items
    ):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    h, w = int(items[0]), int(items[1])
    if h < minimum or w < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return h, w


def output_size(n, f, p, s, axis):
    """``floor((N + 2P - F) / S) + 1``, as in Torch and Caffe.

    Rows and columns left over at the bottom and right are ignored. A size below 1 raises
    ``ValueError`` naming N, F, P and S.
    """
    size = (n + 2 * p - f) // s + 1
    if size < 1:
        raise ValueError(
            f"output {axis} would be {size}: floor((N + 2P - F) / S) + 1 with "
            f"N={n}, F={f}, P={p}, S={s}; the input is too small for the window"
        )
    return size
