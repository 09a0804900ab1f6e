"""The trainer: mini-batch SGD with momentum and weight decay on generated patches.

The training and validation sets are drawn from seeds derived from ``--seed``
(:func:`data_seeds`), so a run is reproducible: the same seed gives the same model on any
number of threads. The learning rate warms up linearly, then follows a cosine to zero. The
best model on the validation set is written to ``--out`` whenever it improves, and Ctrl-C
stops training but keeps the best model seen so far.
"""
import time
from dataclasses import asdict, dataclass

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
    progress: bool = True

    def check(self):
        for name in ("epochs", "batch_size", "train_size", "val_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight-decay must be at least 0, got {self.weight_decay}")


def data_seeds(seed):
    """The data seeds a training run with ``seed`` uses; other seeds give unseen data."""
    return {"train": 1000 + 2 * seed, "validation": 1001 + 2 * seed}


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


def _learning_rate(config, step, total):
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.lr * 0.5 * (1 + np.cos(np.pi * progress))


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
    x_train = net.normalise(x_train).astype(np.float32)
    optimiser = _Sgd(net.params, config.momentum, config.weight_decay)
    rng = np.random.default_rng(config.seed)
    steps_per_epoch = -(-config.train_size // config.batch_size)
    total_steps, step = config.epochs * steps_per_epoch, 0
    best = {"accuracy": -1.0}
    history = []
    interrupted = False
    try:
        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            order = rng.permutation(config.train_size)
            loss_sum = correct = seen = 0
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{config.epochs}",
                       disable=not config.progress, leave=False, unit="batch")
            for b in bar:
                batch = order[b * config.batch_size:(b + 1) * config.batch_size]
                scores = net.forward(x_train[batch], train=True)
                loss, dscores = L.softmax_cross_entropy(scores, y_train[batch])
                optimiser.step(net.params, net.backward(dscores), _learning_rate(config, step, total_steps))
                step += 1
                loss_sum += loss * len(batch)
                correct += int(np.sum(scores.argmax(axis=1) == y_train[batch]))
                seen += len(batch)
                if b % 20 == 0:
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
            seconds = time.perf_counter() - epoch_start
            val_accuracy, per_class = accuracy(net, x_val, y_val)
            history.append({"epoch": epoch, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                            "val_accuracy": val_accuracy, "seconds": seconds})
            log(f"epoch {epoch:2d}/{config.epochs}: loss {loss_sum / seen:.4f}, train accuracy "
                f"{correct / seen:.4f}, validation {val_accuracy:.4f}, {seconds:.1f} s "
                f"({seen / seconds:.0f} samples/s)")
            if val_accuracy > best["accuracy"]:
                best = _keep(net, config, val_accuracy, per_class, epoch, history, seeds)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: keeping the best model so far")
        val_accuracy, per_class = accuracy(net, x_val, y_val)
        if val_accuracy > best["accuracy"]:
            best = _keep(net, config, val_accuracy, per_class, len(history), history, seeds)
    net.params = best["params"]
    # the checkpoint's metrics stop at the best epoch; the summary covers the whole run
    summary = {**best["metrics"], "history": history, "interrupted": interrupted,
               "total_seconds": time.perf_counter() - started}
    return net, summary


def _keep(net, config, val_accuracy, per_class, epoch, history, seeds):
    """Write the net to config.out and remember a copy of its parameters."""
    epoch_seconds = [h["seconds"] for h in history]
    metrics = {
        "val_accuracy": val_accuracy, "per_class_accuracy": per_class, "best_epoch": epoch,
        "history": list(history), "data_seeds": seeds, "threads": get_num_threads(),
        "seconds_per_epoch": float(np.median(epoch_seconds)) if epoch_seconds else None,
        "samples_per_second": config.train_size / float(np.median(epoch_seconds)) if epoch_seconds else None,
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
