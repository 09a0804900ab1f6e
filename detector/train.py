"""The trainer: mini-batch SGD with momentum and weight decay on generated patches.

The training and validation sets are drawn from seeds derived from ``--seed``
(:func:`data_seeds`), so a run is reproducible: the same seed gives the same model on any
number of threads. The learning rate warms up linearly, then follows a cosine to zero. The
best model on the validation set is written to ``--out`` whenever it improves, and Ctrl-C
stops training but keeps the best model seen so far.
"""
import time
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from tqdm import tqdm

from . import checkpoint, data
from . import layers as L
from .model import DEFAULT_SPEC, Net
from .threads import get_num_threads


@dataclass
class TrainConfig:
    out: str
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
        for name in ("epochs", "batch_size", "train_size", "val_size", "mine_scenes", "mine_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight-decay must be at least 0, got {self.weight_decay}")


def data_seeds(seed):
    """The data seeds a training run with ``seed`` uses; other seeds give unseen data.
    Mining round r draws scenes from ``mining + 1000 * r`` on."""
    return {"train": 1000 + 2 * seed, "validation": 1001 + 2 * seed, "mining": 300000 + 100000 * seed}


def accuracy(net, x, labels):
    """Overall accuracy and accuracy per class name on patches x in [0, 1]."""
    predicted = net.predict(x).argmax(axis=1)
    per_class = {name: float(np.mean(predicted[labels == i] == i))
                 for i, name in enumerate(net.classes) if np.any(labels == i)}
    return float(np.mean(predicted == labels)), per_class


class _Sgd:
    """SGD with momentum; weight decay on weights, not biases."""

    def __init__(self, params, momentum, weight_decay):
        self.velocity = {name: np.zeros_like(p) for name, p in params.items()}
        self.momentum, self.weight_decay = momentum, weight_decay

    def step(self, params, grads, lr):
        for name, p in params.items():
            g = grads[name] + self.weight_decay * p if name.endswith(".w") else grads[name]
            v = self.velocity[name]
            v *= self.momentum
            v -= lr * g
            p += v


def _learning_rate(peak, warmup, step, total):
    """Linear warm-up to ``peak``, then a cosine down to zero at step ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, total - warmup)))


def train(config, log=print):
    """Train a net as ``config`` says; return (best net, summary dict)."""
    config.check()
    seeds = data_seeds(config.seed)
    started = time.perf_counter()
    log(f"drawing {config.train_size} training and {config.val_size} validation patches...")
    x_train, y_train = data.patches(config.train_size, seeds["train"])
    x_val, y_val = data.patches(config.val_size, seeds["validation"])
    log(f"  {time.perf_counter() - started:.1f} s")

    net = Net(config.spec, seed=config.seed)
    run = _Run(net, config, seeds, log)
    interrupted = False
    try:
        run.fit(net.normalise(x_train).astype(np.float32), y_train, x_val, y_val, config.epochs, config.lr)
        for round_ in range(1, config.mine_rounds + 1):
            net.params = {k: v.copy() for k, v in run.best["params"].items()}
            first = seeds["mining"] + 1000 * round_
            negatives = mine_negatives(net, range(first, first + config.mine_scenes))
            log(f"mining round {round_}: {len(negatives)} false positives from {config.mine_scenes} "
                "scenes join the background class")
            x_train = np.concatenate([x_train, negatives])
            y_train = np.concatenate([y_train, np.zeros(len(negatives), y_train.dtype)])
            run.best = {"accuracy": -1.0}  # the new data sets a new bar
            run.fit(net.normalise(x_train).astype(np.float32), y_train, x_val, y_val,
                    config.mine_epochs, config.lr / 5, mined=len(negatives))
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: keeping the best model so far")
        run.consider(*accuracy(net, x_val, y_val))
    net.params = run.best["params"]
    # the checkpoint's metrics stop at the best epoch; the summary covers the whole run
    summary = {**run.best["metrics"], "history": run.history, "interrupted": interrupted,
               "total_seconds": time.perf_counter() - started}
    return net, summary


def false_positives(net, image, boxes, min_iou=0.5, **detect_options):
    """Detections of ``net`` in ``image`` that overlap no ground-truth box (of any label)
    by ``min_iou``: windows that fire where no digit is centred at the right size."""
    from .detect import detect
    from .nms import iou

    found = detect(image, net, max_detections=None, **detect_options).detections
    return [d for d in found if not len(boxes) or iou(np.array(d.box), boxes).max() < min_iou]


def mine_negatives(net, scene_seeds, min_iou=0.5):
    """32x32 background patches of the :func:`false_positives` in generated scenes, each cut
    from the pyramid level that fired, around the detection's centre."""
    from .detect import TRAINED_HEIGHT, as_gray

    patches = []
    for seed in scene_seeds:
        image, boxes, _ = data.scene(seed)
        gray = as_gray(image)
        for d in false_positives(net, image, boxes, min_iou):
            box = np.array(d.box)
            scale = TRAINED_HEIGHT * net.window[0] / (box[3] - box[1])
            size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
            level = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            cx, cy = (box[0] + box[2]) / 2 * scale, (box[1] + box[3]) / 2 * scale
            patches.append(cv2.getRectSubPix(level, net.window[::-1], (float(cx), float(cy)))[None])
    return np.array(patches, np.float32).reshape(-1, 1, *net.window)


class _Run:
    """The epoch loop, the best model so far and the history of one training run."""

    def __init__(self, net, config, seeds, log):
        self.net, self.config, self.seeds, self.log = net, config, seeds, log
        self.rng = np.random.default_rng(config.seed)
        self.best, self.history, self.mined = {"accuracy": -1.0}, [], 0

    def fit(self, x_train, y_train, x_val, y_val, epochs, lr, mined=0):
        config, net = self.config, self.net
        self.mined += mined
        optimiser = _Sgd(net.params, config.momentum, config.weight_decay)
        steps_per_epoch = -(-len(x_train) // config.batch_size)
        total_steps, step = epochs * steps_per_epoch, 0
        for epoch in range(1, epochs + 1):
            epoch_start = time.perf_counter()
            order = self.rng.permutation(len(x_train))
            loss_sum = correct = seen = 0
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{epochs}",
                       disable=not config.progress, leave=False, unit="batch")
            for b in bar:
                batch = order[b * config.batch_size:(b + 1) * config.batch_size]
                scores = net.forward(x_train[batch], train=True)
                loss, dscores = L.softmax_cross_entropy(scores, y_train[batch])
                optimiser.step(net.params, net.backward(dscores),
                               _learning_rate(lr, config.warmup_steps, step, total_steps))
                step += 1
                loss_sum += loss * len(batch)
                correct += int(np.sum(scores.argmax(axis=1) == y_train[batch]))
                seen += len(batch)
                if b % 20 == 0:
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
            seconds = time.perf_counter() - epoch_start
            val_accuracy, per_class = accuracy(net, x_val, y_val)
            self.history.append({"epoch": len(self.history) + 1, "loss": loss_sum / seen,
                                 "train_accuracy": correct / seen, "val_accuracy": val_accuracy,
                                 "seconds": seconds, "samples": seen})
            self.log(f"epoch {epoch:2d}/{epochs}: loss {loss_sum / seen:.4f}, train accuracy "
                     f"{correct / seen:.4f}, validation {val_accuracy:.4f}, {seconds:.1f} s "
                     f"({seen / seconds:.0f} samples/s)")
            self.consider(val_accuracy, per_class)

    def consider(self, val_accuracy, per_class):
        """Keep the net if it is the best on validation so far."""
        if val_accuracy > self.best["accuracy"]:
            self.best = _keep(self.net, self.config, val_accuracy, per_class, len(self.history),
                              self.history, self.seeds, self.mined)


def _keep(net, config, val_accuracy, per_class, epoch, history, seeds, mined):
    """Write the net to config.out and remember a copy of its parameters."""
    seconds = [h["seconds"] for h in history]
    rates = [h["samples"] / h["seconds"] for h in history]
    metrics = {
        "val_accuracy": val_accuracy, "per_class_accuracy": per_class, "best_epoch": epoch,
        "history": list(history), "data_seeds": seeds, "threads": get_num_threads(),
        "mined_negatives": mined,
        "seconds_per_epoch": float(np.median(seconds)) if seconds else None,
        "samples_per_second": float(np.median(rates)) if rates else None,
        "config": {k: v for k, v in asdict(config).items() if k not in ("out", "progress")},
    }
    checkpoint.save(net, config.out, metrics=metrics, seed=config.seed)
    return {"accuracy": val_accuracy, "params": {k: v.copy() for k, v in net.params.items()}, "metrics": metrics}


def format_summary(summary, classes):
    lines = [f"best validation accuracy {summary['val_accuracy']:.4f} (epoch {summary['best_epoch']})",
             "per class: " + ", ".join(f"{c} {summary['per_class_accuracy'][c]:.3f}" for c in classes
                                       if c in summary["per_class_accuracy"])]
    if summary["seconds_per_epoch"]:
        lines.append(f"{summary['seconds_per_epoch']:.1f} s per epoch (median), "
                     f"{summary['samples_per_second']:.0f} training samples/s, "
                     f"{summary['total_seconds'] / 60:.1f} min in all on {summary['threads']} threads")
    return "\n".join(lines)
