"""Waiting for a condition in tests: poll it, never race a fixed sleep (CI machines are loaded)."""
import time


def eventually(condition, seconds=10.0, every=0.05):
    """Poll ``condition()`` until it holds; False if it never did within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True
