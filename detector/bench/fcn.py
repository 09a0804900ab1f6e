"""``detector bench fcn``: the shipped model's fully convolutional pass against PyTorch and
ONNX Runtime running the same net with the same weights.

For each thread count and each square image side: the median time of our
:meth:`~detector.fcn.FullyConvNet.scores`, of PyTorch's and of ONNX Runtime's pass over the
same normalised image (1, C, side, side), and the ratios their time / our time (above 1: we
are faster). Before any timing, each reference's scores are checked equal to ours (max
|difference| < :data:`~detector.bench.references.TOLERANCE`), so that the same computation
is compared. A reference that is not installed is skipped with a note.

The JSON keeps the vocabulary of :mod:`detector.report_json`: ``image_size`` as
``{"width", "height"}``, durations in milliseconds under keys ending in ``_ms``.
"""
import json
import math

import numpy as np

from .. import load_model
from ..report_json import size_json
from ..threads import get_num_threads, set_num_threads
from . import references
from .timing import median_seconds

TARGET = 1.0  # at least ONNX Runtime's speed...
TARGET_SIDES = (512, 2048)  # ...at every side in this range...
TARGET_THREADS = (1, 2)  # ...on each of these thread counts
REFERENCES = ("torch", "onnxruntime")
LABELS = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime"}


def _seconds_for(side):
    """Time to fill with runs of one side: big images get fewer seconds (and at least 5 runs)."""
    return 1.0 if side <= 512 else 0.5


def _geomean(values):
    values = [v for v in values if v is not None]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _image(net, side, rng):
    return net.normalise(rng.random((1, net.channels, side, side), dtype=np.float32)).astype(np.float32)


class _Torch:
    """PyTorch's pass: ``at(threads)`` sets its threads and gives the runner."""

    def __init__(self, fcn):
        import torch

        self.torch, self.net = torch, references.torch_fcn(fcn)

    def at(self, threads):
        self.torch.set_num_threads(threads)
        return self.net


class _OnnxRuntime:
    """ONNX Runtime's pass: one session per thread count, built once."""

    def __init__(self, fcn, threads):
        model = references.onnx_fcn(fcn)
        self.sessions = {n: references.OnnxRuntimeFcn(fcn, n, model) for n in threads}

    def at(self, threads):
        return self.sessions[threads]


def _references(fcn, threads):
    """{name: reference} of those installed, and {name: note} of the others."""
    notes = references.missing()
    kinds = {"torch": lambda: _Torch(fcn), "onnxruntime": lambda: _OnnxRuntime(fcn, threads)}
    return {name: make() for name, make in kinds.items() if name not in notes}, notes


def _target(runs, available):
    """The target against ONNX Runtime: a check per run in its range, and the verdict (True,
    False, or None when it cannot be judged from these runs) with the reason."""
    low, high = TARGET_SIDES
    checks = [{"what": f"{r['image_size']['width']}x{r['image_size']['height']}, {r['threads']} "
                       f"thread{'s' if r['threads'] > 1 else ''}",
               "value": r["speedup_vs_onnxruntime"], "target": TARGET, "met": r["speedup_vs_onnxruntime"] >= TARGET}
              for r in runs if low <= r["image_size"]["width"] <= high and r["threads"] in TARGET_THREADS
              and r["speedup_vs_onnxruntime"] is not None]
    measured = {(r["image_size"]["width"], r["threads"]) for r in runs}
    covered = all((side, n) in measured for side in TARGET_SIDES for n in TARGET_THREADS)
    if "onnxruntime" not in available:
        met, verdict = None, "not judged: ONNX Runtime is not installed"
    elif not all(c["met"] for c in checks):
        met = False
        verdict = "MISSED at " + ", ".join(f"{c['what']} ({c['value']:.2f}x)" for c in checks if not c["met"])
    elif not covered:
        met, verdict = None, (f"not judged: run sides {low} to {high} at "
                              + " and ".join(map(str, TARGET_THREADS)) + " threads")
    else:
        met, verdict = True, "met"
    what = (f"FCN pass >= {TARGET:g}x ONNX Runtime's speed at every side from {low} to {high}, at "
            + " and ".join(map(str, TARGET_THREADS)) + " threads")
    return {"what": what, "met": met, "verdict": verdict, "checks": checks}


def run(threads=(1, 2), sizes=(256, 512, 1024, 2048), seed=0):
    """Measure every (thread count, side); return a JSON-ready dict."""
    net = load_model()
    fcn = net.to_fcn()
    rng = np.random.default_rng(seed)
    found, notes = _references(fcn, threads)
    previous = get_num_threads()
    torch_previous = found["torch"].torch.get_num_threads() if "torch" in found else None
    runs = []
    try:
        for n in threads:
            set_num_threads(n)
            for side in sizes:
                x = _image(net, side, rng)
                ours = fcn.scores(x)
                row = {"threads": n, "image_size": size_json(side, side), "map_size": size_json(*ours.shape[:1:-1])}
                runners = {name: ref.at(n) for name, ref in found.items()}
                for name, runner in runners.items():  # the same computation, or no timing at all
                    row[f"{name}_max_abs_difference"] = references.check_same(LABELS[name], ours, runner.scores(x))
                seconds = _seconds_for(side)
                mine = median_seconds(lambda: fcn.scores(x), min_repeats=5, min_seconds=seconds)
                row["detector_ms"] = mine * 1e3
                for name in REFERENCES:
                    if name in runners:
                        scores = runners[name].scores
                        theirs = median_seconds(lambda: scores(x), min_repeats=5, min_seconds=seconds)
                        row[f"{name}_ms"], row[f"speedup_vs_{name}"] = theirs * 1e3, theirs / mine
                    else:
                        row[f"{name}_ms"] = row[f"speedup_vs_{name}"] = None
                runs.append(row)
    finally:
        set_num_threads(previous)
        if torch_previous is not None:
            found["torch"].torch.set_num_threads(torch_previous)
    geomean = [{"threads": n, **{f"speedup_vs_{name}": _geomean([r[f"speedup_vs_{name}"] for r in runs
                                                                 if r["threads"] == n]) for name in REFERENCES}}
               for n in threads]
    return {"model": net.spec, "window": size_json(net.window[1], net.window[0]), "stride": net.total_stride[0],
            "dtype": "float32", "threads": list(threads),
            "references": {k: v if k in found else None for k, v in references.versions().items()},
            "notes": list(notes.values()), "runs": runs, "geomean": geomean,
            "target": _target(runs, found)}


def _ratio(value):
    return f"{value:.2f}x" if value is not None else "-"


def _ms(value):
    return f"{value:.2f}" if value is not None else "-"


def format_table(result):
    lines = [f"detector bench fcn: the shipped model ({result['model']}) over square images, float32, "
             "medians of repeated runs; ratio = their time / ours (above 1: we are faster)"]
    versions = ", ".join(f"{LABELS[k]} {v}" for k, v in result["references"].items() if v)
    if versions:
        lines.append(f"references: {versions}, same weights, scores checked equal (max |diff| < "
                     f"{references.TOLERANCE:g}) before timing")
    lines += [f"note: {note}" for note in result["notes"]]
    lines += ["", f"{'threads':>7}{'size':>11}{'ours ms':>11}{'PyTorch ms':>12}{'ratio':>8}"
                  f"{'ORT ms':>11}{'ratio':>8}"]
    for n in result["threads"]:
        for r in (r for r in result["runs"] if r["threads"] == n):
            size = f"{r['image_size']['width']}x{r['image_size']['height']}"
            lines.append(f"{n:>7}{size:>11}{_ms(r['detector_ms']):>11}{_ms(r['torch_ms']):>12}"
                         f"{_ratio(r['speedup_vs_torch']):>8}{_ms(r['onnxruntime_ms']):>11}"
                         f"{_ratio(r['speedup_vs_onnxruntime']):>8}")
        g = next(g for g in result["geomean"] if g["threads"] == n)
        lines.append(f"{n:>7}{'geo. mean':>11}{'':>11}{'':>12}{_ratio(g['speedup_vs_torch']):>8}{'':>11}"
                     f"{_ratio(g['speedup_vs_onnxruntime']):>8}")
    target = result["target"]
    lines += ["", f"target: {target['what']}: {target['verdict']}"]
    return "\n".join(lines)


def main(args):
    """``detector bench fcn``; ``args.threads`` and ``args.sizes`` are tuples (the parser checks them)."""
    result = run(args.threads, args.sizes)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
