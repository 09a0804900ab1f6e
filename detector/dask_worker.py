"""What a Dask worker runs for ``detector detect --scheduler``: a plugin that loads the model
once per worker, and the task that detects in one image (see :mod:`detector.batch`). Imported
only where ``dask.distributed`` is installed."""
import os

from distributed import WorkerPlugin, get_worker

from .batch import detect_file


class ModelOnWorker(WorkerPlugin):
    """The worker keeps the batch's job under the plugin's ``name`` and loads its model once,
    when it starts."""

    def __init__(self, job, name):
        self.job, self.name = job, name

    def setup(self, worker):
        from . import heap
        from .threads import set_num_threads

        # Dask's nanny asks glibc to trim freed memory at once (MALLOC_TRIM_THRESHOLD_): every
        # image's arrays would be faulted in afresh
        heap.retain()

        # Dask's nanny sets OMP_NUM_THREADS (to 1 by default) for the libraries a worker runs:
        # the kernels follow it; without it, the worker's task threads share the cores
        omp = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(omp) if omp.isdigit() and int(omp) > 0 else (os.cpu_count() or 1) // max(1, worker.state.nthreads)
        set_num_threads(max(1, threads))
        self.job.net()
        if not hasattr(worker, "detector_jobs"):
            worker.detector_jobs = {}
        worker.detector_jobs[self.name] = self.job

    def teardown(self, worker):
        getattr(worker, "detector_jobs", {}).pop(self.name, None)


def detect_on_worker(name, items):
    """[(record, detections)] of each (index, path) of ``items``, on the model of the batch
    ``name``."""
    job = get_worker().detector_jobs[name]
    return [detect_file(job, index, path) for index, path in items]
