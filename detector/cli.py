"""The ``detector`` command line."""
import argparse
import sys


def _parser():
    parser = argparse.ArgumentParser(prog="detector", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="measure speed against NumPy on this machine")
    targets = bench.add_subparsers(dest="target", required=True)
    layers = targets.add_parser("layers", help="forward and backward of each layer kernel")
    layers.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.command == "bench" and args.target == "layers":
        from .bench import layers
        return layers.main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
