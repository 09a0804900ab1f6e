"""The detector command line: train, data, bench."""
import argparse
import sys


def _parser():
    from .model import DEFAULT_SPEC
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="detector", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train the classifier on generated patches")
    defaults = TrainConfig(out="")
    train.add_argument("--out", required=True, help="checkpoint to write (.npz), the best model on validation")
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    train.add_argument("--momentum", type=float, default=defaults.momentum)
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    train.add_argument("--seed", type=int, default=defaults.seed, help="initialisation, shuffling and data seeds")
    train.add_argument("--spec", default=DEFAULT_SPEC, help=f"architecture (default: {DEFAULT_SPEC!r})")
    train.add_argument("--train-size", type=int, default=defaults.train_size, help="training patches")
    train.add_argument("--val-size", type=int, default=defaults.val_size, help="validation patches")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    data = commands.add_parser("data", help="look at the generated data")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    preview = data_commands.add_parser("preview", help="draw a labelled grid of training patches")
    preview.add_argument("--out", required=True, help="PNG to write")
    preview.add_argument("--n", type=int, default=160, help="how many patches")
    preview.add_argument("--seed", type=int, default=0)

    bench = commands.add_parser("bench", help="measure speed against NumPy on this machine")
    targets = bench.add_subparsers(dest="target", required=True)
    layers = targets.add_parser("layers", help="forward and backward of each layer kernel")
    layers.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _train(args):
    from .train import TrainConfig, format_summary, train

    config = TrainConfig(out=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         momentum=args.momentum, weight_decay=args.weight_decay, seed=args.seed,
                         spec=args.spec, train_size=args.train_size, val_size=args.val_size,
                         progress=not args.no_progress)
    net, summary = train(config)
    print(format_summary(summary, net.classes))
    print(f"wrote {args.out}")
    return 130 if summary["interrupted"] else 0


def _preview(args):
    import cv2

    from . import data

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    x, labels = data.patches(args.n, args.seed)
    if not cv2.imwrite(args.out, data.preview(x, labels)):
        raise ValueError(f"could not write {args.out}: use a .png path in an existing folder")
    print(f"wrote {args.out}: {args.n} patches, seed {args.seed}")
    return 0


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "data":
            return _preview(args)
        from .bench import layers
        return layers.main(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        parser.exit(2, f"detector: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
