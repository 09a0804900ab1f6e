"""Fixtures shared by the test modules."""
import threading

import numpy as np
import pytest

import detector


@pytest.fixture
def threads():
    """``detector.set_num_threads``, with the thread count put back after the test."""
    previous = detector.get_num_threads()
    yield detector.set_num_threads
    detector.set_num_threads(previous)


@pytest.fixture
def same_bits_for_any_thread_count(threads):
    """``check(run, counts)``: ``run()`` returns a list of arrays, and gives the same bits with
    each thread count of ``counts`` as with one thread."""
    def check(run, counts=(2, 3, 7)):
        threads(1)
        single = run()
        for n in counts:
            threads(n)
            again = run()
            assert len(again) == len(single)
            for a, b in zip(single, again):
                np.testing.assert_array_equal(a, b)
    return check


@pytest.fixture
def gated_server(monkeypatch, request):
    """A server (gRPC and HTTP) of two workers and two places whose Detect calls wait for
    ``release`` once they have started: ``started`` counts them, so a test knows when both places are taken
    without racing the clock."""
    from detector_server import servicer, start_server

    started, release, lock = [], threading.Event(), threading.Lock()
    real = servicer.detect

    def gated(*args, **kwargs):
        with lock:
            started.append(1)
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(servicer, "detect", gated)
    # max_memory_mb: room for one small call's estimate (~100 MB) at a time, for the test
    # of the shared memory budget; the others take one call per place
    memory = 150 if "memory_budget" in request.node.name else 1024
    running = start_server(port=0, workers=2, max_concurrent=2, max_memory_mb=memory, http_port=0)
    running.started, running.release = started, release
    yield running
    release.set()
    running.stop(0).wait()
