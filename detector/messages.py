"""Errors as the one line the command line and batch records show."""


def one_line(text):
    """``text`` with its lines stripped and joined by spaces."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def error_message(error):
    """An exception's message on one line: "path: reason" for an OSError that names a file."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        return one_line(f"{error.filename}: {error.strerror}")
    return one_line(error) or type(error).__name__
