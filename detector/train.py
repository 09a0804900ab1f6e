"""The trainer: mini-batch SGD with momentum and weight decay on windows of any data source
(:mod:`detector.datasets`: the built-in digits, a COCO data set or a folder of crops).

A run is reproducible: the data's seeds derive from ``--seed`` (the digits' in
:func:`detector.datasets.sources.digit_seeds`), and the same seed gives the same model on
any number of threads. The learning rate warms up
linearly, then follows a cosine to zero. The best model on validation (split by image) is
written to ``--out`` whenever it improves, and Ctrl-C stops training but keeps it.

Besides the class scores, the net learns by default a box-regression head (4 offsets from
the window's prior box, :mod:`detector.boxes`) with a smooth-L1 loss on the object windows,
so that boxes fit their objects at every pyramid level. Afterwards, ``mine_rounds`` rounds of
hard-negative mining run the detector over the training images (and the negatives folder),
and every detection that overlaps no object joins the background class.
"""
import re
import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from . import boxes as box_coding
from . import checkpoint
from . import heap
from . import layers as L
from .architecture import DEFAULT_SPEC
from .datasets import DIGITS, WindowSet, box_aspects, open_data
from .model import Net
from .threads import get_num_threads

BOX_LOSS_WEIGHT = 1.0
HUBER_BETA = 0.1  # smooth L1: quadratic below this offset error, linear above
# the gradient's global norm is scaled down to this: the median step's norm is about 1, and
# a rare step of 50 at the peak learning rate could kill every ReLU of a colour net
CLIP_NORM = 5.0


@dataclass
class TrainConfig:
    out: str
    data: str = DIGITS
    channels: int = 1
    images: str = None
    background: str = "background"
    negatives: str = None
    object_size: float = None
    val_fraction: float = 0.2
    windows_per_box: int = 8
    skip_bad: bool = False
    box_regression: bool = True
    epochs: int = 12
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    spec: str = DEFAULT_SPEC
    train_size: int = 60000
    val_size: int = 5000
    warmup_steps: int = 300
    mine_rounds: int = 0
    mine_scenes: int = 150
    mine_epochs: int = 4
    progress: bool = True

    def check(self):
        if self.mine_rounds < 0:
            raise ValueError(f"mine-rounds must be at least 0, got {self.mine_rounds}")
        for name in ("epochs", "batch_size", "train_size", "val_size", "mine_scenes", "mine_epochs",
                     "windows_per_box"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight-decay must be at least 0, got {self.weight_decay}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val-fraction must lie in (0, 1), got {self.val_fraction}")
        if self.object_size is not None and not 0 < self.object_size <= 1:
            raise ValueError(f"object-size is a fraction of the window in (0, 1], got {self.object_size}")


def head_spec(spec, classes):
    """``spec`` with its last layer set to one output per class: a final ``fcK`` becomes
    ``fc<classes>``, and a spec that does not end in fc gets one."""
    tokens = spec.split()
    if tokens and re.fullmatch(r"fc\d+", tokens[-1]):
        tokens[-1] = f"fc{classes}"
    else:
        tokens.append(f"fc{classes}")
    return " ".join(tokens)


def accuracy(net, x, labels):
    """Overall accuracy and accuracy per class name on windows x in [0, 1]."""
    predicted = net.predict(x).argmax(axis=1)
    per_class = {name: float(np.mean(predicted[labels == i] == i))
                 for i, name in enumerate(net.classes) if np.any(labels == i)}
    return float(np.mean(predicted == labels)), per_class


def _object_windows(net, windows):
    """The rows of the windows that hold an object with a known box, and those boxes'
    priors: centres (n, 2), widths and heights (n,)."""
    rows = np.nonzero((windows.labels != net.background_index) & np.isfinite(windows.boxes).all(axis=1))[0]
    centres = np.tile([net.window[1] / 2, net.window[0] / 2], (len(rows), 1))
    return rows, (centres, *net.prior_sizes(windows.labels[rows]))


def box_targets(net, windows):
    """Regression targets (N, 4) of the windows' boxes from their class's prior box; NaN
    rows where there is no box (background)."""
    targets = np.full((len(windows), 4), np.nan)
    rows, priors = _object_windows(net, windows)
    if len(rows):
        targets[rows] = box_coding.encode(windows.boxes[rows], *priors)
    return targets.astype(np.float32)


def box_iou(net, windows):
    """Mean IoU of the boxes the head predicts with the true boxes of the object windows."""
    rows, priors = _object_windows(net, windows)
    if not net.box_regression or not len(rows):
        return None
    _, offsets = net.predict_boxes(windows.x[rows])
    predicted = box_coding.decode(offsets, *priors)
    truth = windows.boxes[rows].astype(np.float64)
    inter = np.prod(np.clip(np.minimum(predicted[:, 2:], truth[:, 2:]) - np.maximum(predicted[:, :2], truth[:, :2]),
                            0, None), axis=1)
    union = np.prod(predicted[:, 2:] - predicted[:, :2], axis=1) + np.prod(truth[:, 2:] - truth[:, :2], axis=1) - inter
    return float(np.mean(inter / union))


def smooth_l1(pred, targets, beta=HUBER_BETA):
    """Mean over the rows with targets of the summed smooth-L1 loss, and its gradient."""
    grad = np.zeros_like(pred)
    rows = np.isfinite(targets).all(axis=1)
    if not rows.any():
        return 0.0, grad
    diff = pred[rows] - targets[rows]
    small = np.abs(diff) < beta
    loss = np.where(small, 0.5 * diff ** 2 / beta, np.abs(diff) - 0.5 * beta).sum() / len(pred)
    grad[rows] = np.where(small, diff / beta, np.sign(diff)) / len(pred)
    return float(loss), grad


class _Sgd:
    """SGD with momentum, the gradient clipped to a global norm of :data:`CLIP_NORM`;
    weight decay on weights, not biases."""

    def __init__(self, params, momentum, weight_decay):
        self.velocity = {name: np.zeros_like(p) for name, p in params.items()}
        self.momentum, self.weight_decay = momentum, weight_decay

    def step(self, params, grads, lr):
        norm = np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
        clip = min(1.0, CLIP_NORM / norm) if norm > 0 else 1.0
        for name, p in params.items():
            g = clip * grads[name]
            if name.endswith(".w"):
                g = g + self.weight_decay * p
            v = self.velocity[name]
            v *= self.momentum
            v -= lr * g
            p += v


def _learning_rate(peak, warmup, step, total):
    """Linear warm-up to ``peak``, then a cosine down to zero at step ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, total - warmup)))


def build_net(config, data, windows):
    """A fresh net for ``data``: its classes, channels and window, the per-channel
    normalisation and box aspects of the training windows."""
    mean = windows.x.mean(axis=(0, 2, 3), dtype=np.float64)
    std = windows.x.std(axis=(0, 2, 3), dtype=np.float64)
    normalisation = {"mean": [round(float(v), 4) for v in mean],
                     "std": [round(float(max(v, 0.05)), 4) for v in std]}
    return Net(head_spec(config.spec, len(data.classes)), (data.channels, *data.window), data.classes,
               seed=config.seed, normalisation=normalisation, background=data.background,
               object_size=data.object_size, box_aspects=box_aspects(windows, data.classes),
               box_regression=config.box_regression)


def train(config, log=print, data=None):
    """Train a net as ``config`` says (on ``data``, a :class:`detector.datasets` source, or
    the one ``config.data`` names); return (best net, summary dict)."""
    config.check()
    heap.retain()  # each step's arrays are reused from the heap, not faulted in afresh
    started = time.perf_counter()
    if data is None:
        data = open_data(config.data, channels=config.channels, seed=config.seed, images_dir=config.images,
                         background=config.background, negatives=config.negatives, object_size=config.object_size,
                         val_fraction=config.val_fraction, windows_per_box=config.windows_per_box,
                         train_size=config.train_size, val_size=config.val_size, skip_bad=config.skip_bad, log=log)
    log("cutting training and validation windows...")
    train_set, val_set = data.windows("train"), data.windows("validation")
    log(f"  {len(train_set)} training and {len(val_set)} validation windows "
        f"({_class_counts(train_set, data.classes)}) in {time.perf_counter() - started:.1f} s")
    net = build_net(config, data, train_set)
    if config.mine_rounds:
        net.to_fcn()  # mining detects: a net that cannot be unrolled is refused now, not after training
    net.data = data.describe()
    run = _Run(net, config, val_set, log)
    interrupted = False
    try:
        run.fit(train_set, config.epochs, config.lr)
        for round_ in range(1, config.mine_rounds + 1):
            net.params = {k: v.copy() for k, v in run.best["params"].items()}
            scenes = data.mining_scenes(round_, config.mine_scenes)
            negatives = mine_negatives(net, scenes)
            log(f"mining round {round_}: {len(negatives)} false positives on the training images join "
                "the background class")
            train_set = WindowSet.concat([train_set, WindowSet.background(negatives)])
            run.best = {"accuracy": -1.0}  # the new data sets a new bar
            run.fit(train_set, config.mine_epochs, config.lr / 5, mined=len(negatives))
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: keeping the best model so far")
        run.consider(*accuracy(net, val_set.x, val_set.labels))
    net.params = run.best["params"]
    net.metrics = run.best["metrics"]
    if not interrupted:
        ap = validation_ap(net, data.scenes("validation"))
        if ap is not None:
            log(f"validation images: COCO AP@0.5 {ap['ap50']:.4f}, AP@[.5:.95] {ap['ap']:.4f} "
                "(" + ", ".join(f"{c} {v['ap50']:.3f}" for c, v in ap["per_class"].items()) + ")")
            net.metrics["val_detection"] = ap
            checkpoint.save(net, config.out, metrics=net.metrics, seed=config.seed, data=net.data)
    # the checkpoint's metrics stop at the best epoch; the summary covers the whole run
    summary = {**net.metrics, "history": run.history, "interrupted": interrupted,
               "total_seconds": time.perf_counter() - started}
    return net, summary


def validation_ap(net, scenes):
    """COCO AP@0.5 and AP@[.5:.95] of the detector on the validation images (image, boxes,
    labels), or None when the data has none (crop folders)."""
    from .detect import detect
    from .evaluate import coco_average_precision

    images = [([(d.box, d.label, d.score) for d in detect(image, net).detections], boxes, labels)
              for image, boxes, labels in scenes]
    if not images:
        return None
    return coco_average_precision(images, net.objects)


def _class_counts(windows, classes):
    counts = np.bincount(windows.labels, minlength=len(classes))
    return ", ".join(f"{c} {n}" for c, n in zip(classes, counts))


def false_positives(net, image, boxes, min_iou=0.5, **detect_options):
    """Detections of ``net`` in ``image`` that overlap no ground-truth box (of any label)
    by ``min_iou``: windows that fire where no object is centred at the right size."""
    from .detect import detect
    from .nms import iou

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    found = detect(image, net, max_detections=None, **detect_options).detections
    return [d for d in found if not len(boxes) or iou(np.array(d.box), boxes).max() < min_iou]


def mine_negatives(net, scenes, min_iou=0.5, **detect_options):
    """Background windows (N, C, H, W) of the :func:`false_positives` in ``scenes``, pairs
    of (image, boxes): each cut so that the detection's box sits in the window as an object
    would in a positive window."""
    from .datasets.windows import positive_windows
    from .detect import as_model_input

    rng = np.random.default_rng(0)
    patches = [np.empty((0, net.channels, *net.window), np.float32)]
    for image, boxes in scenes:
        found = false_positives(net, image, boxes, min_iou, **detect_options)
        if found:
            pixels = as_model_input(image, net.channels)
            pixels = pixels[:, :, 0] if net.channels == 1 else pixels
            x, _, _ = positive_windows(pixels, np.array([d.box for d in found]), net.window, net.object_size,
                                       rng, per_box=1, scale_jitter=1.0, shift=0.0)
            patches.append(x.astype(np.float32))
    return np.concatenate(patches)


class _Run:
    """The epoch loop, the best model so far and the history of one training run."""

    def __init__(self, net, config, val_set, log):
        self.net, self.config, self.val_set, self.log = net, config, val_set, log
        self.rng = np.random.default_rng(config.seed)
        self.best, self.history, self.mined = {"accuracy": -1.0}, [], 0

    def fit(self, windows, epochs, lr, mined=0):
        config, net = self.config, self.net
        self.mined += mined
        x_train = net.normalise(windows.x).astype(np.float32)
        y_train, targets = windows.labels, box_targets(net, windows)
        classes = len(net.classes)
        optimiser = _Sgd(net.params, config.momentum, config.weight_decay)
        steps_per_epoch = -(-len(x_train) // config.batch_size)
        total_steps, step = epochs * steps_per_epoch, 0
        for epoch in range(1, epochs + 1):
            epoch_start = time.perf_counter()
            order = self.rng.permutation(len(x_train))
            loss_sum = box_sum = correct = seen = 0
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{epochs}",
                       disable=not config.progress, leave=False, unit="batch")
            for b in bar:
                batch = order[b * config.batch_size:(b + 1) * config.batch_size]
                scores = net.forward(x_train[batch], train=True)
                loss, dscores = L.softmax_cross_entropy(scores[:, :classes], y_train[batch])
                if net.box_regression:
                    box_loss, dboxes = smooth_l1(scores[:, classes:], targets[batch])
                    dscores = np.concatenate([dscores, BOX_LOSS_WEIGHT * dboxes.astype(dscores.dtype)], axis=1)
                    box_sum += box_loss * len(batch)
                optimiser.step(net.params, net.backward(dscores),
                               _learning_rate(lr, config.warmup_steps, step, total_steps))
                step += 1
                loss_sum += loss * len(batch)
                correct += int(np.sum(scores[:, :classes].argmax(axis=1) == y_train[batch]))
                seen += len(batch)
                if b % 20 == 0:
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
            seconds = time.perf_counter() - epoch_start
            val_accuracy, per_class = accuracy(net, self.val_set.x, self.val_set.labels)
            iou = box_iou(net, self.val_set)
            self.history.append({"epoch": len(self.history) + 1, "loss": loss_sum / seen,
                                 "box_loss": box_sum / seen, "train_accuracy": correct / seen,
                                 "val_accuracy": val_accuracy, "val_box_iou": iou,
                                 "seconds": seconds, "samples": seen})
            self.log(f"epoch {epoch:2d}/{epochs}: loss {loss_sum / seen:.4f}, train accuracy "
                     f"{correct / seen:.4f}, validation {val_accuracy:.4f}"
                     + (f", box IoU {iou:.3f}" if iou is not None else "")
                     + f", {seconds:.1f} s ({seen / seconds:.0f} samples/s)")
            self.consider(val_accuracy, per_class, iou)

    def consider(self, val_accuracy, per_class, iou=None):
        """Keep the net if it is the best on validation so far."""
        if val_accuracy > self.best["accuracy"]:
            self.best = self._keep(val_accuracy, per_class, iou)

    def _keep(self, val_accuracy, per_class, iou):
        """Write the net to config.out and remember a copy of its parameters."""
        net, config, history = self.net, self.config, self.history
        seconds = [h["seconds"] for h in history]
        rates = [h["samples"] / h["seconds"] for h in history]
        metrics = {
            "val_accuracy": val_accuracy, "per_class_accuracy": per_class, "val_box_iou": iou,
            "best_epoch": len(history), "history": list(history), "data_seeds": net.data.get("seeds", {}),
            "threads": get_num_threads(), "mined_negatives": self.mined,
            "seconds_per_epoch": float(np.median(seconds)) if seconds else None,
            "samples_per_second": float(np.median(rates)) if rates else None,
            "config": {k: v for k, v in asdict(config).items() if k not in ("out", "progress")},
        }
        net.metrics = metrics
        checkpoint.save(net, config.out, metrics=metrics, seed=config.seed, data=net.data)
        return {"accuracy": val_accuracy, "params": {k: v.copy() for k, v in net.params.items()},
                "metrics": metrics}


def format_summary(summary, classes):
    lines = [f"best validation accuracy {summary['val_accuracy']:.4f} (epoch {summary['best_epoch']})"
             + (f", box IoU {summary['val_box_iou']:.3f}" if summary.get("val_box_iou") is not None else ""),
             "per class: " + ", ".join(f"{c} {summary['per_class_accuracy'][c]:.3f}" for c in classes
                                       if c in summary["per_class_accuracy"])]
    if summary["seconds_per_epoch"]:
        lines.append(f"{summary['seconds_per_epoch']:.1f} s per epoch (median), "
                     f"{summary['samples_per_second']:.0f} training samples/s, "
                     f"{summary['total_seconds'] / 60:.1f} min in all on {summary['threads']} threads")
    return "\n".join(lines)
