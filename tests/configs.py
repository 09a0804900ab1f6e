"""Seeded random layer configurations for the parameter sweeps."""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Conv:
    n: int
    c: int
    k: int
    h: int
    w: int
    size: tuple
    stride: tuple
    padding: tuple
    dtype: str

    def arrays(self, seed=0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.n, self.c, self.h, self.w)).astype(self.dtype)
        w = rng.standard_normal((self.k, self.c, *self.size)).astype(self.dtype)
        b = rng.standard_normal(self.k).astype(self.dtype)
        return x, w, b


@dataclass(frozen=True)
class Pool:
    kind: str
    n: int
    c: int
    h: int
    w: int
    size: tuple
    stride: tuple
    padding: tuple
    dtype: str


def _fitting_extent(rng, f, p, s, largest):
    """An input extent n >= 1 with floor((n + 2p - f) / s) + 1 >= 1."""
    smallest = max(1, f - 2 * p)
    return int(rng.integers(smallest, smallest + largest + 1))


def conv_configs(count, seed, max_kernel=7, max_extent=12, dtypes=("float32", "float64")):
    rng = np.random.default_rng(seed)
    configs = []
    for i in range(count):
        size = tuple(int(v) for v in rng.integers(1, max_kernel + 1, 2))
        stride = tuple(int(v) for v in rng.integers(1, 4, 2))
        padding = tuple(int(v) for v in rng.integers(0, 3, 2))
        h = _fitting_extent(rng, size[0], padding[0], stride[0], max_extent)
        w = _fitting_extent(rng, size[1], padding[1], stride[1], max_extent)
        configs.append(Conv(
            n=int(rng.choice([1, 1, 2, 3])), c=int(rng.choice([1, 2, 3, 5])),
            k=int(rng.choice([1, 2, 4])), h=h, w=w, size=size, stride=stride,
            padding=padding, dtype=dtypes[i % len(dtypes)],
        ))
    return configs


def pool_configs(count, seed, kinds=("max", "avg", "l2"), max_extent=12,
                 dtypes=("float32", "float64")):
    rng = np.random.default_rng(seed)
    configs = []
    for i in range(count):
        size = tuple(int(v) for v in rng.integers(1, 5, 2))
        stride = tuple(int(v) for v in rng.integers(1, 4, 2))
        padding = tuple(int(rng.integers(0, f // 2 + 1)) for f in size)
        h = _fitting_extent(rng, size[0], padding[0], stride[0], max_extent)
        w = _fitting_extent(rng, size[1], padding[1], stride[1], max_extent)
        configs.append(Pool(
            kind=kinds[i % len(kinds)], n=int(rng.choice([1, 2, 3])),
            c=int(rng.choice([1, 2, 4])), h=h, w=w, size=size, stride=stride,
            padding=padding, dtype=dtypes[(i // len(kinds)) % len(dtypes)],
        ))
    return configs


def distinct_values(shape, seed, dtype="float64"):
    """Shuffled, well-separated values: no ties, and a 1e-6 nudge never reorders them."""
    rng = np.random.default_rng(seed)
    values = rng.permutation(int(np.prod(shape))).astype(dtype) * 0.1 - 3.0
    return values.reshape(shape)
