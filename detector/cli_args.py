"""Argument types for the command line: each parses one value and checks its range, so that
a bad value is refused by the parser, with the range in the message, before any work.

Every type raises :class:`argparse.ArgumentTypeError`; argparse prefixes the option's name.
No type accepts NaN or an infinity.

>>> port("8080"), count("3"), probability("0.5")
(8080, 3, 0.5)
>>> port("70000")
Traceback (most recent call last):
argparse.ArgumentTypeError: must be a whole number from 0 to 65535, got '70000'
"""
import argparse
import math

# gRPC's message limits are 32-bit byte counts (detector_server.app.MAX_MESSAGE_MB)
MAX_MESSAGE_MB = 2047


def whole(low, high=None):
    """A type for a whole number in [low, high] (no upper bound when ``high`` is None)."""
    expected = f"a whole number from {low} to {high}" if high is not None else f"a whole number of at least {low}"

    def parse(text):
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value

    parse.__name__ = "whole number"
    return parse


def number(low=None, high=None, low_open=False, high_open=False, unit=""):
    """A type for a finite number (of ``unit``, for the message) in the interval from ``low``
    to ``high`` (either may be None: unbounded), each end open or closed."""
    expected = f"a number of {unit}" if unit else "a number"
    if low is not None and high is not None:
        expected += f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        expected += f" {'above' if low_open else 'of at least'} {low:g}"
    else:
        expected = f"a finite {expected[2:]}"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def whole_list(low):
    """A type for comma-separated whole numbers, each at least ``low``: "1,4,16" -> (1, 4, 16)."""
    one = whole(low)

    def parse(text):
        try:
            values = tuple(one(part.strip()) for part in text.split(","))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"must be whole numbers of at least {low}, separated by commas, got {text!r}") from None
        return values

    parse.__name__ = "list"
    return parse


def choice_list(choices):
    """A type for comma-separated names, each one of ``choices``, none twice: "grpc,http"."""
    def parse(text):
        names = tuple(part.strip() for part in text.split(","))
        if not all(n in choices for n in names) or len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(f"must be one or more of {', '.join(choices)}, separated by commas, "
                                             f"got {text!r}")
        return names

    parse.__name__ = "list"
    return parse


def image_size(text):
    """(width, height) from "WxH", each side 32 to 8192 pixels."""
    try:
        width, height = (int(v, 10) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be WxH in pixels, such as 640x480, got {text!r}") from None
    if not (32 <= width <= 8192 and 32 <= height <= 8192):
        raise argparse.ArgumentTypeError(f"must be between 32x32 and 8192x8192, got {text!r}")
    return width, height


port = whole(0, 65535)
count = whole(1)  # workers, threads, images, requests, epochs...
non_negative = whole(0)  # seeds, ids, rounds that may be none
probability = number(0, 1)  # thresholds, IoU
fraction = number(0, 1, low_open=True, high_open=True)
positive = number(0, low_open=True)  # sizes, rates, limits
non_negative_number = number(0)
seconds = number(0, low_open=True, unit="seconds")
seconds_or_zero = number(0, unit="seconds")
message_mb = number(1, MAX_MESSAGE_MB, unit="MB")


def scale_step(text):
    """The ratio of neighbouring pyramid levels: at least :data:`detector.detect.MIN_SCALE_STEP`."""
    from .detect import MIN_SCALE_STEP

    return number(MIN_SCALE_STEP)(text)
