"""heap.retain: freed arrays stay in the heap, so the next step's arrays fault no new pages."""
import json
import subprocess
import sys

import pytest

# In a fresh process: minor page faults of ten rounds of three 3 MiB arrays (below NumPy's
# huge-page hint) allocated, filled and freed, as a step's activations are, before and after
# heap.retain(). glibc raises its mmap threshold to 3 MiB after the first free, but trims the
# heap when more than twice that is free at its top: every round faults its pages again.
MEASURE = """
import json, resource
import numpy as np
from detector import heap

def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        arrays = [np.empty(3 << 18, np.float32) for _ in range(3)]
        for a in arrays:
            a.fill(1)
        del arrays, a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

before = faults()
took = heap.retain()
faults()  # the heap grows once
print(json.dumps({"before": before, "took": took, "after": faults()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_memory_is_reused_without_page_faults():
    run = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(run.stdout)
    assert result["took"] is True
    pages = 10 * 3 * (3 << 20) // 4096
    assert result["before"] > pages // 2, result  # glibc maps and unmaps each array
    assert result["after"] < pages // 20, result
