"""``detector bench layers``: the kernels' speed beside NumPy's on the same machine.

For each layer: forward and backward, milliseconds and GFLOP/s (medians), and the ratio
to NumPy's float32 matmul rate (1024^3), sampled between the cases and pooled so that a
drift of the machine's speed during the run affects both sides. Convolution and linear
layers also get the rate NumPy reaches on the very GEMMs of that layer when the im2col
matrix is given for free: the ceiling of any im2col + BLAS implementation. Max pooling
is compared with NumPy's reshape-and-max trick. When PyTorch is installed, every layer is also
timed in ``torch.nn.functional`` (backward through its ATen kernels, on the same number of
threads) beside ``speedup_vs_torch``, its time / ours; it is skipped with a note otherwise.
Convolutions time ours and PyTorch's call by call in turns, so that a change in the machine's
load (another process, or BLAS threads still spinning after the sgemm sample) falls on both.

The JSON keeps the vocabulary of :mod:`detector.report_json`: durations in milliseconds under
keys ending in ``_ms``.
"""
import importlib
import importlib.util
import json
import statistics

import numpy as np

from .. import layers as L
from .. import heap
from ..threads import get_num_threads
from .timing import median_seconds, paired_median_seconds, sgemm_seconds

SGEMM_N = 1024
CONV_CASES = [  # (x shape, filters, kernel size, padding)
    ((64, 16, 32, 32), 32, 3, 1),
    ((64, 1, 32, 32), 16, 5, 0),
    ((64, 16, 14, 14), 32, 5, 0),
    ((1, 16, 512, 512), 32, 5, 0),
]
POOL_CASE = (64, 32, 28, 28)
LINEAR_CASE = (256, 512, 128)  # (N, D) -> M
TARGETS = {"conv forward": 0.5, "conv backward": 0.4}
TORCH_TARGET = 1.0  # conv forward and backward at least PyTorch's speed, on every shape


class _Reference:
    """NumPy's sgemm rate, sampled between the cases."""

    def __init__(self):
        self.samples = []

    def sample(self):
        self.samples.append(2 * SGEMM_N**3 / sgemm_seconds(SGEMM_N) / 1e9)

    @property
    def gflops(self):
        return statistics.median(self.samples)



def _gemm_passes(flops, fwd, bwd, np_fwd, np_bwd):
    """Forward and backward times and rates of a GEMM layer (backward does twice the FLOPs),
    beside NumPy's rate on the same products."""
    return {"forward": {"median_ms": fwd * 1e3, "gflops": flops / fwd / 1e9,
                        "numpy_same_gemm_gflops": flops / np_fwd / 1e9},
            "backward": {"median_ms": bwd * 1e3, "gflops": 2 * flops / bwd / 1e9,
                         "numpy_same_gemm_gflops": 2 * flops / np_bwd / 1e9}}

def _torch():
    """torch, on the kernels' number of threads, or None when it is not installed."""
    if importlib.util.find_spec("torch") is None:
        return None
    torch = importlib.import_module("torch")
    torch.set_num_threads(get_num_threads())
    return torch


def _against_torch(result, fwd, bwd, torch_fwd, torch_bwd):
    """Add PyTorch's medians (and its time / ours) to a case's passes: torch_fwd and
    torch_bwd are its seconds, or functions to time."""
    for pass_, ours, theirs in (("forward", fwd, torch_fwd), ("backward", bwd, torch_bwd)):
        seconds = theirs if isinstance(theirs, float) else median_seconds(theirs)
        result[pass_].update(torch_ms=seconds * 1e3, speedup_vs_torch=seconds / ours)
    return result


def _conv_case(shape, k, f, pad, rng, torch=None):
    n, c, h, w = shape
    x = rng.standard_normal(shape, dtype=np.float32)
    wt = rng.standard_normal((k, c, f, f), dtype=np.float32)
    b = rng.standard_normal(k, dtype=np.float32)
    out, cache = L.conv2d_forward(x, wt, b, padding=pad)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    flops = 2.0 * out.size * c * f * f
    forward = lambda: L.conv2d_forward(x, wt, b, padding=pad)  # noqa: E731
    backward = lambda: L.conv2d_backward(dout, cache)  # noqa: E731
    if torch is None:
        fwd, bwd = median_seconds(forward), median_seconds(backward)
    else:
        tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, wt, b, dout))
        fwd, torch_fwd = paired_median_seconds(
            [forward, lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=pad)])
        bwd, torch_bwd = paired_median_seconds(
            [backward, lambda: torch.ops.aten.convolution_backward(
                tg, tx, tw, [k], [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, [True, True, True])])
    # the same products as plain NumPy GEMMs, the im2col matrix given for free
    cols = rng.standard_normal((c * f * f, out.size // k), dtype=np.float32)
    wmat, g = wt.reshape(k, -1), rng.standard_normal((k, cols.shape[1]), dtype=np.float32)
    np_fwd = median_seconds(lambda: wmat @ cols)
    np_bwd = median_seconds(lambda: (g @ cols.T, wmat.T @ g))
    name = f"conv {shape} {k}x{f}x{f}" + (f" pad {pad}" if pad else "")
    result = {"name": name, "input_channels": c, **_gemm_passes(flops, fwd, bwd, np_fwd, np_bwd)}
    return result if torch is None else _against_torch(result, fwd, bwd, torch_fwd, torch_bwd)


def _pool_case(rng, torch=None):
    x = rng.standard_normal(POOL_CASE, dtype=np.float32)
    n, c, h, w = POOL_CASE
    out, cache = L.max_pool2d_forward(x, 2)
    dout = np.ones_like(out)
    fwd = median_seconds(lambda: L.max_pool2d_forward(x, 2))
    bwd = median_seconds(lambda: L.max_pool2d_backward(dout, cache))
    trick = median_seconds(lambda: x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5)))
    result = {
        "name": f"max-pool 2x2 {POOL_CASE}",
        "forward": {"median_ms": fwd * 1e3, "numpy_reshape_max_ms": trick * 1e3,
                    "speedup_vs_numpy": trick / fwd},
        "backward": {"median_ms": bwd * 1e3},
    }
    if torch is None:
        return result
    tx, tg = torch.from_numpy(x), torch.from_numpy(dout)
    _, indices = torch.nn.functional.max_pool2d_with_indices(tx, 2)
    return _against_torch(
        result, fwd, bwd, lambda: torch.nn.functional.max_pool2d_with_indices(tx, 2),
        lambda: torch.ops.aten.max_pool2d_with_indices_backward(tg, tx, [2, 2], [2, 2], [0, 0], [1, 1], False,
                                                                indices))


def _linear_case(rng, torch=None):
    n, d, m = LINEAR_CASE
    x = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((m, d), dtype=np.float32)
    b = rng.standard_normal(m, dtype=np.float32)
    out, cache = L.linear_forward(x, w, b)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    flops = 2.0 * n * d * m
    fwd = median_seconds(lambda: L.linear_forward(x, w, b))
    bwd = median_seconds(lambda: L.linear_backward(dout, cache))
    np_fwd = median_seconds(lambda: x @ w.T + b)
    np_bwd = median_seconds(lambda: (dout @ w, dout.T @ x, dout.sum(0)))
    result = {"name": f"linear ({n},{d})->{m}", **_gemm_passes(flops, fwd, bwd, np_fwd, np_bwd)}
    if torch is None:
        return result
    tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w, b, dout))
    return _against_torch(result, fwd, bwd, lambda: torch.nn.functional.linear(tx, tw, tb),
                          lambda: (tg @ tw, tg.T @ tx, tg.sum(0)))


def _targets(cases, sgemm):
    checks = []
    for case in cases:
        if case["name"].startswith("conv") and case["input_channels"] >= 16:
            for pass_, key in (("forward", "conv forward"), ("backward", "conv backward")):
                ratio = case[pass_]["gflops"] / sgemm
                checks.append({"what": f"{case['name']} {pass_}", "value": ratio,
                               "target": TARGETS[key], "met": ratio >= TARGETS[key]})
        if case["name"].startswith("conv") and "speedup_vs_torch" in case["forward"]:
            for pass_ in ("forward", "backward"):
                speedup = case[pass_]["speedup_vs_torch"]
                checks.append({"what": f"{case['name']} {pass_} vs PyTorch", "value": speedup,
                               "target": TORCH_TARGET, "met": speedup >= TORCH_TARGET})
        if case["name"].startswith("max-pool"):
            speedup = case["forward"]["speedup_vs_numpy"]
            checks.append({"what": f"{case['name']} forward vs NumPy reshape-max", "value": speedup,
                           "target": 1.0, "met": speedup >= 1.0})
    return checks


def run(seed=0):
    """Measure every case; return a JSON-ready dict."""
    heap.retain()  # the layers as the trainer runs them
    rng = np.random.default_rng(seed)
    reference = _Reference()
    torch = _torch()
    torch_threads = torch.get_num_threads() if torch else None
    cases = []
    try:
        for shape, k, f, pad in CONV_CASES:
            reference.sample()
            cases.append(_conv_case(shape, k, f, pad, rng, torch))
        reference.sample()
        cases.append(_pool_case(rng, torch))
        cases.append(_linear_case(rng, torch))
        reference.sample()
    finally:
        if torch:
            torch.set_num_threads(torch_threads)
    sgemm = reference.gflops
    for case in cases:
        for pass_ in ("forward", "backward"):
            if "gflops" in case[pass_]:
                case[pass_]["ratio_to_sgemm"] = case[pass_]["gflops"] / sgemm
    return {
        "threads": get_num_threads(), "dtype": "float32",
        "numpy_sgemm_gflops": sgemm, "numpy_sgemm_samples": reference.samples,
        "torch": torch.__version__ if torch else None,
        "notes": [] if torch else ["PyTorch is not installed: its column is skipped (pip install torch)"],
        "cases": cases, "targets": _targets(cases, sgemm),
    }


def format_table(result):
    lines = [
        f"detector bench layers: float32, {result['threads']} threads, medians of repeated runs",
        f"NumPy sgemm {SGEMM_N}^3: {result['numpy_sgemm_gflops']:.1f} GFLOP/s "
        f"(median of {len(result['numpy_sgemm_samples'])} samples taken between the cases)",
        "speed-up: PyTorch's time / ours, on the same threads (above 1: we are faster)",
        *(f"note: {note}" for note in result["notes"]),
        "",
        f"{'layer':<38}{'pass':<6}{'ms':>9}{'GFLOP/s':>10}{'/sgemm':>8}{'/NumPy same GEMMs':>19}"
        f"{'PyTorch ms':>12}{'speed-up':>14}",
    ]
    for case in result["cases"]:
        for i, pass_ in enumerate(("forward", "backward")):
            r = case[pass_]
            label = case["name"] if i == 0 else ""
            row = f"{label:<38}{pass_[:3]:<6}{r['median_ms']:>9.3f}"
            if "gflops" in r:
                row += f"{r['gflops']:>10.1f}{r['ratio_to_sgemm']:>8.2f}"
                row += f"{r['gflops'] / r['numpy_same_gemm_gflops']:>19.2f}"
            else:
                row += f"{'':>37}"
            if "torch_ms" in r:
                row += f"{r['torch_ms']:>12.3f}{r['speedup_vs_torch']:>13.2f}x"
            if "speedup_vs_numpy" in r:
                row += f"   NumPy reshape-max {r['numpy_reshape_max_ms']:.3f} ms: {r['speedup_vs_numpy']:.1f}x faster"
            lines.append(row)
    lines += ["", "targets:"]
    for t in result["targets"]:
        verdict = "met" if t["met"] else "MISSED"
        lines.append(f"  {t['what']:<62} {t['value']:6.2f} (target >= {t['target']:.2f}) {verdict}")
    return "\n".join(lines)


def main(args):
    result = run()
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
