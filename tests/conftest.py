"""Fixtures shared by the test modules."""
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
