"""Fixtures shared by the test modules."""
import pytest

import detector


@pytest.fixture
def threads():
    """``detector.set_num_threads``, with the thread count put back after the test."""
    previous = detector.get_num_threads()
    yield detector.set_num_threads
    detector.set_num_threads(previous)
