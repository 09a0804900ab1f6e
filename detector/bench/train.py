"""``detector bench train``: one training step of the default architecture against PyTorch.

The step is the trainer's (:mod:`detector.train`): ``net.forward(x, train=True)``, softmax
cross-entropy on the class scores plus the smooth-L1 box loss on the object windows (the
default net has a box-regression head, and both sides include its loss), ``net.backward``,
and the trainer's SGD update (momentum, weight decay on weights, the gradient clipped to a
global norm). PyTorch runs the same net from the same initial weights: ``nn.Sequential``,
``F.cross_entropy`` + ``F.smooth_l1_loss``, ``clip_grad_norm_`` and ``torch.optim.SGD`` with
the trainer's momentum and weight decay, at the trainer's peak learning rate (constant here).
Before timing, one step on each side is checked to give the same loss and parameter updates.

The batch is ``--batch`` digit patches (1, 32, 32), normalised as the trainer does once
before its epochs. Our step is also split into its phases (forward, loss, backward, update).
Durations are in milliseconds under keys ending in ``_ms`` (:mod:`detector.report_json`).
"""
import importlib
import json
import statistics
import time

import numpy as np

from .. import layers as L
from .. import heap
from ..architecture import DEFAULT_SPEC
from ..datasets import WindowSet, digits
from ..model import DEFAULT_CLASSES, DEFAULT_INPUT, Net
from ..threads import get_num_threads, set_num_threads
from ..train import BOX_LOSS_WEIGHT, CLIP_NORM, HUBER_BETA, TrainConfig, _Sgd, box_targets, head_spec, smooth_l1
from . import references
from .timing import median_seconds, paired_median_seconds

TARGET = 1.2  # at least 1.2x PyTorch's speed...
TARGET_THREADS = (1, 2)  # ...on each of these thread counts
PHASES = ("forward", "loss", "backward", "update")
# one step from the same weights: the same loss, and the same parameter updates relative to
# the largest, to float32 rounding
TOLERANCE = 1e-4


class _Ours:
    """The trainer's step on our net, each phase timed."""

    def __init__(self, net, config, x, labels, targets):
        self.net, self.x, self.labels, self.targets = net, x, labels, targets
        self.lr, self.classes = config.lr, len(net.classes)
        self.optimiser = _Sgd(net.params, config.momentum, config.weight_decay)
        self.phases = {p: [] for p in PHASES}

    def step(self):
        net, classes, clock = self.net, self.classes, [time.perf_counter()]
        scores = net.forward(self.x, train=True)
        clock.append(time.perf_counter())
        loss, dscores = L.softmax_cross_entropy(scores[:, :classes], self.labels)
        if net.box_regression:
            box_loss, dboxes = smooth_l1(scores[:, classes:], self.targets)
            dscores = np.concatenate([dscores, BOX_LOSS_WEIGHT * dboxes.astype(dscores.dtype)], axis=1)
            loss += BOX_LOSS_WEIGHT * box_loss
        clock.append(time.perf_counter())
        grads = net.backward(dscores)
        clock.append(time.perf_counter())
        self.optimiser.step(net.params, grads, self.lr)
        clock.append(time.perf_counter())
        for phase, start, end in zip(PHASES, clock, clock[1:]):
            self.phases[phase].append(end - start)
        return loss

    def params(self):
        return self.net.params


class _Torch:
    """The same step in PyTorch."""

    def __init__(self, net, config, x, labels, targets):
        import torch

        self.torch, self.F = torch, torch.nn.functional
        self.model = references.torch_classifier(net).train()
        self.names = [name for layer in net.layers for name in (f"{layer.name}.w", f"{layer.name}.b")
                      if name in net.params]
        weights = [p for p in self.model.parameters() if p.dim() > 1]
        biases = [p for p in self.model.parameters() if p.dim() == 1]
        self.optimiser = torch.optim.SGD([{"params": weights, "weight_decay": config.weight_decay},
                                          {"params": biases, "weight_decay": 0.0}],
                                         lr=config.lr, momentum=config.momentum)
        self.x, self.labels = torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))
        rows = np.flatnonzero(np.isfinite(targets).all(axis=1))
        self.rows, self.targets = torch.from_numpy(rows), torch.from_numpy(targets[rows])
        self.classes, self.box_regression, self.batch = len(net.classes), net.box_regression, len(x)

    def step(self):
        torch, F, classes = self.torch, self.F, self.classes
        self.optimiser.zero_grad(set_to_none=True)
        scores = self.model(self.x)
        loss = F.cross_entropy(scores[:, :classes], self.labels)
        if self.box_regression and len(self.rows):
            boxes = scores[self.rows, classes:]
            loss = loss + BOX_LOSS_WEIGHT * F.smooth_l1_loss(boxes, self.targets, beta=HUBER_BETA,
                                                             reduction="sum") / self.batch
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP_NORM)
        self.optimiser.step()
        return loss.detach().item()

    def params(self):
        return {name: p.detach().numpy() for name, p in zip(self.names, self.model.parameters())}


def _batch(net, size, seed):
    """``size`` normalised digit patches, their labels and box targets."""
    x, labels, boxes = digits.patches(size, seed)
    windows = WindowSet(x, labels, boxes)
    return net.normalise(x).astype(np.float32), labels, box_targets(net, windows)


def _check_same_step(ours, theirs):
    """One step on each side from the same weights: |loss difference|, and the largest
    difference of the parameter updates relative to the largest update."""
    before = {k: v.copy() for k, v in ours.params().items()}
    loss_difference = abs(ours.step() - theirs.step())
    mine, other = ours.params(), theirs.params()
    largest = max(float(np.abs(mine[k] - before[k]).max()) for k in before)
    update_difference = max(references.max_difference(mine[k], other[k]) for k in before) / largest
    if not (loss_difference < TOLERANCE and update_difference < TOLERANCE):
        raise RuntimeError(f"PyTorch's training step does not compute what ours computes (loss differs by "
                           f"{loss_difference:.3g}, parameter updates by {update_difference:.3g} of the largest; "
                           f"tolerance {TOLERANCE:g})")
    for phase in PHASES:
        ours.phases[phase].clear()
    return loss_difference, update_difference


def run(threads=(1, 2), batch=64, seed=0):
    """Measure a step at each thread count; return a JSON-ready dict."""
    config = TrainConfig(out="", batch_size=batch)
    heap.retain()  # as the trainer does
    note = references.missing().get("torch")
    torch = None if note else importlib.import_module("torch")
    previous = get_num_threads()
    torch_previous = torch.get_num_threads() if torch else None
    runs = []
    try:
        for n in threads:
            set_num_threads(n)
            net = Net(head_spec(config.spec, len(DEFAULT_CLASSES)), DEFAULT_INPUT, DEFAULT_CLASSES, seed=config.seed,
                      box_regression=config.box_regression)
            x, labels, targets = _batch(net, batch, seed)
            ours = _Ours(net, config, x, labels, targets)
            row = {"threads": n}
            if torch:
                torch.set_num_threads(n)
                theirs = _Torch(net, config, x, labels, targets)  # the same initial weights
                row["loss_difference"], row["relative_update_difference"] = _check_same_step(ours, theirs)
            ours.phases = {p: [] for p in PHASES}
            if torch:  # in turns, so that the machine's load falls on both alike
                mine, other = paired_median_seconds([ours.step, theirs.step], min_repeats=20, min_seconds=2.0)
                row["torch_ms"], row["speedup_vs_torch"] = other * 1e3, other / mine
            else:
                mine = median_seconds(ours.step, min_repeats=10, min_seconds=1.0)
                row["torch_ms"] = row["speedup_vs_torch"] = None
            row["detector_ms"] = mine * 1e3
            row["detector_phases_ms"] = {f"{p}_ms": statistics.median(ours.phases[p]) * 1e3 for p in PHASES}
            runs.append(row)
    finally:
        set_num_threads(previous)
        if torch:
            torch.set_num_threads(torch_previous)
    return {"model": DEFAULT_SPEC, "input_shape": list(DEFAULT_INPUT), "batch": batch, "dtype": "float32",
            "box_regression": config.box_regression,
            "loss": "softmax cross-entropy on the class scores + smooth L1 (beta "
                    f"{HUBER_BETA:g}) on the box offsets of the object windows",
            "optimiser": {"lr": config.lr, "momentum": config.momentum, "weight_decay": config.weight_decay,
                          "clip_norm": CLIP_NORM},
            "threads": list(threads), "references": {"torch": references.versions()["torch"] if torch else None},
            "notes": [note] if note else [],
            "runs": runs, "target": _target(runs, torch is not None)}


def _target(runs, available):
    checks = [{"what": f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}", "value": r["speedup_vs_torch"],
               "target": TARGET, "met": r["speedup_vs_torch"] >= TARGET}
              for r in runs if r["threads"] in TARGET_THREADS and r["speedup_vs_torch"] is not None]
    measured = {r["threads"] for r in runs}
    if not available:
        met, verdict = None, "not judged: PyTorch is not installed"
    elif not all(c["met"] for c in checks):
        met = False
        verdict = "MISSED at " + ", ".join(f"{c['what']} ({c['value']:.2f}x)" for c in checks if not c["met"])
    elif not set(TARGET_THREADS) <= measured:
        met, verdict = None, "not judged: run " + " and ".join(map(str, TARGET_THREADS)) + " threads"
    else:
        met, verdict = True, "met"
    what = (f"training step >= {TARGET:g}x PyTorch's speed at " + " and ".join(map(str, TARGET_THREADS))
            + " threads")
    return {"what": what, "met": met, "verdict": verdict, "checks": checks}


def format_table(result):
    o = result["optimiser"]
    lines = [f"detector bench train: one SGD step of {result['model']} on a batch of {result['batch']} "
             f"{'x'.join(map(str, result['input_shape']))} digit patches, float32, medians of repeated runs",
             f"step: forward, loss ({result['loss']}), backward, SGD (lr {o['lr']:g}, momentum {o['momentum']:g}, "
             f"weight decay {o['weight_decay']:g} on weights, gradient norm clipped to {o['clip_norm']:g})",
             "ratio = PyTorch's time / ours (above 1: we are faster)"]
    if result["references"]["torch"]:
        lines.append(f"reference: PyTorch {result['references']['torch']}, same initial weights; one step checked "
                     f"to give the same loss and updates (< {TOLERANCE:g}) before timing")
    lines += [f"note: {note}" for note in result["notes"]]
    lines += ["", f"{'threads':>7}{'ours ms':>10}{'PyTorch ms':>12}{'ratio':>8}   "
                  "ours: " + " / ".join(PHASES) + " ms"]
    for r in result["runs"]:
        phases = " / ".join(f"{r['detector_phases_ms'][p + '_ms']:.2f}" for p in PHASES)
        torch_ms = f"{r['torch_ms']:.2f}" if r["torch_ms"] is not None else "-"
        ratio = f"{r['speedup_vs_torch']:.2f}x" if r["speedup_vs_torch"] is not None else "-"
        lines.append(f"{r['threads']:>7}{r['detector_ms']:>10.2f}{torch_ms:>12}{ratio:>8}   {phases}")
    target = result["target"]
    lines += ["", f"target: {target['what']}: {target['verdict']}"]
    return "\n".join(lines)


def main(args):
    """``detector bench train``; ``args.threads`` is a tuple (the parser checks it)."""
    result = run(args.threads, args.batch)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
