"""The work and memory budget: estimates against real runs, refusals before any work."""
import json
import math
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import detector
from detector.budget import Budget, OverBudget
from detector.datasets import digits
from detector.detect import DetectOptions, cost, detect

NET = detector.load_model()

# One detection in a fresh process: its peak resident memory (VmHWM, which belongs to the
# address space, unlike ru_maxrss, which a child inherits from the parent it forked from)
# over the resident memory just before, beside the estimate. Writing 5 to clear_refs resets
# the peak to the resident size, after the image is made and the kernels are warmed up.
MEASURE = """
import json, sys
import numpy as np
import detector
from detector.detect import DetectOptions, cost, detect
def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))
shape, options = json.loads(sys.argv[1]), DetectOptions(**json.loads(sys.argv[2]))
spec = json.loads(sys.argv[3])
net = detector.load_model() if spec is None else detector.Net(spec, (1, 32, 32), [str(i) for i in range(11)], seed=0)
image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
detect(np.zeros((40, 40), np.uint8), net, options.replace(scales=None, stride=None))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
resident = status("VmRSS:")
detect(image, net, options)
print(json.dumps({"measured": status("VmHWM:") - resident, "estimate": cost(shape, net, options).memory_bytes}))
"""


@pytest.mark.parametrize("shape, options, spec", [
    ((1500, 1500), {"scales": [1.5]}, None),  # one large gray level
    ((900, 1200, 3), {"return_maps": True}, None),  # colour in, the whole pyramid, maps kept
    ((1600, 1600, 4), {"scales": [0.6, 0.4]}, None),  # BGRA in: the input's copies dominate
    ((300, 400), {"mode": "sliding", "scales": [1.0]}, None),  # sliding batches
    ((700, 700), {"scales": [1.0], "stride": 2}, None),  # shift-and-stitch: four passes, a 4x map
    # no pool: full-size maps through the Winograd kernel, images side by side
    ((200, 260), {"mode": "sliding", "scales": [1.0]}, "conv16@3x3 relu conv16@3x3 relu fc32 relu fc11"),
])
def test_the_memory_estimate_bounds_a_real_run(shape, options, spec):
    run = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(shape), json.dumps(options), json.dumps(spec)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout)
    measured, estimate = figures["measured"], figures["estimate"]
    assert measured <= estimate, figures
    if spec is None:  # an estimate, not a ceiling pulled from the air
        # (the pool-less net's batches fit in the heap its warm-up left once the Winograd
        # kernel stopped copying its outputs side by side: 4.7 MB measured, 23 MB before)
        assert estimate <= 3 * measured + 64 * 2**20, figures


@pytest.mark.parametrize("mode, stride", [("fcn", None), ("fcn", 2), ("sliding", None), ("sliding", 8)])
def test_the_work_is_the_flops_of_the_windows_detect_scores(mode, stride):
    """Counted independently: every window of every level detect returns costs the
    classifier's FLOPs once in sliding mode; the FCN's are those of its layers over each
    padded level, once per shift-and-stitch offset."""
    image = np.zeros((150, 210), np.uint8)
    options = DetectOptions(mode=mode, stride=stride, return_maps=True)
    levels = detect(image, NET, options).levels
    per_window, shape = 0, NET.input_shape
    for layer, after in zip(NET.layers, NET.shapes[1:]):
        if hasattr(layer, "filters"):
            per_window += 2 * math.prod(after) * shape[0] * math.prod(layer.size)
        elif hasattr(layer, "outputs"):
            per_window += 2 * layer.outputs * math.prod(shape)
        shape = after
    got = cost(image.shape, NET, options)
    assert got.levels == len(levels)
    assert got.map_bytes == sum(level.scores.nbytes for level in levels)
    if mode == "sliding":
        windows = sum(level.scores.shape[1] * level.scores.shape[2] for level in levels)
        assert got.gflops == pytest.approx(windows * per_window / 1e9)
        assert got.pixels == windows * 32 * 32
    else:
        assert got.gflops > 0 and got.pixels >= sum(round(150 * lv.scale) * round(210 * lv.scale) for lv in levels)


def test_detect_refuses_over_budget_work_before_allocating_anything():
    image = np.zeros((2000, 2000), np.uint8)
    tracemalloc.start()
    try:
        with pytest.raises(OverBudget, match=r"needs about [\d,]+ MB .*the limit is 100 MB"):
            detect(image, NET, scales=[4.0], budget=Budget(max_memory_mb=100))
        with pytest.raises(OverBudget, match=r"needs [\d,]+ GFLOP .*the limit is 10"):
            detect(image, NET, budget=Budget(max_gflops=10))
        with pytest.raises(OverBudget, match=r"2000x2000 = 4,000,000 pixels; at most 1,000,000"):
            detect(image, NET, budget=Budget(max_pixels=1_000_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20  # nothing of the image's size was allocated


def test_work_within_the_budget_runs_as_without_one():
    image = digits.scene(5, size=(320, 240))[0]
    plain, budgeted = detect(image, NET), detect(image, NET, budget=Budget())
    assert [(d.box, d.label, d.score) for d in plain.detections] == \
        [(d.box, d.label, d.score) for d in budgeted.detections]


@pytest.mark.parametrize("field, value", [("max_pixels", 0), ("max_gflops", -1.0), ("max_memory_mb", float("nan")),
                                          ("max_gflops", float("inf")), ("max_pixels", True), ("max_memory_mb", "9")])
def test_a_budget_takes_only_positive_finite_numbers(field, value):
    with pytest.raises(ValueError, match=field):
        Budget(**{field: value})
