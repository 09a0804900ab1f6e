"""Detection over many images: paths expanded, results streamed, failures recorded, resumable.

:func:`expand` turns files, folders (searched recursively for images), globs and ``@list.txt``
files into one ordered list of image paths. :func:`run` detects in each, in this process, in
``workers`` processes (each loads the model once, and runs its kernels on cores / workers
threads) or on a Dask cluster (``scheduler``: a worker plugin loads the model once in each
worker; the model and the images reach the workers by path, so they must share the
filesystem), and streams one JSON object per image as it finishes to a JSONL file: its path,
its index in the list (the ``image_id`` of the COCO results), size, detections and timings,
or its ``error``. An unreadable or corrupt image is recorded and the run goes on.

A JSONL line is written and flushed whole; a killed run leaves at most a partial last line.
With ``resume``, that line is cut off and every image already recorded without an error is
skipped, so an interrupted run loses nothing that finished.
"""
import glob
import json
import os
import time
from dataclasses import dataclass, field

from .messages import error_message

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def expand(paths):
    """The image paths named by ``paths``: files as given, folders searched recursively for
    images (sorted), globs (``**`` recursive, sorted) and ``@list.txt`` (one path a line,
    relative to the list's folder; blank lines and ``#`` comments skipped). Each image once,
    in order. Raises ValueError naming the path that names nothing."""
    found = []
    for path in paths:
        if path.startswith("@"):
            found += _listed(path[1:])
        elif os.path.isfile(path):  # before globs: "photo[1].png" is a file's name
            found.append(path)
        elif glob.has_magic(path):
            # each file once, though a symbolic link loop offers it under many names
            matches = sorted({os.path.realpath(p): p for p in glob.glob(path, recursive=True) if os.path.isfile(p)}.values())
            if not matches:
                raise ValueError(f"no file matches {path}")
            found += matches
        elif os.path.isdir(path):
            images = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                            if name.lower().endswith(IMAGE_SUFFIXES))
            if not images:
                raise ValueError(f"{path} holds no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)})")
            found += images
        else:
            raise ValueError(f"{path}: no such file or folder")
    return list(dict.fromkeys(found))


def _listed(list_path):
    if not os.path.isfile(list_path):
        raise ValueError(f"@{list_path}: no such list file")
    folder = os.path.dirname(list_path)
    found = []
    with open(list_path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            path = line if os.path.isabs(line) else os.path.join(folder, line)
            if not os.path.isfile(path):
                raise ValueError(f"{list_path}, line {number}: {line}: no such file")
            found.append(path)
    if not found:
        raise ValueError(f"@{list_path} lists no images")
    return found


def finished(jsonl_path):
    """Images recorded without an error in a JSONL file of an earlier run; a partial last
    line (a killed write) is cut off the file."""
    if not os.path.exists(jsonl_path):
        return set()
    done, keep = set(), 0
    with open(jsonl_path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except ValueError:
                break
            keep += len(line)
            if "error" not in record:
                done.add(record["image"])
    if keep != os.path.getsize(jsonl_path):
        os.truncate(jsonl_path, keep)
    return done


@dataclass
class Job:
    """What every image's detection needs, sent once to each worker process."""
    model_path: str
    options: object  # detector.detect.DetectOptions
    budget: object  # detector.budget.Budget
    max_pixels: int
    threads: int = 0  # kernel threads in a worker process (0: leave as is)
    out_dir: str = None
    root: str = None  # the common folder of the inputs, for out_dir's names
    _net: object = field(default=None, repr=False)

    def __getstate__(self):  # workers load the model themselves
        return {**self.__dict__, "_net": None}

    def net(self):
        if self._net is None:
            from .checkpoint import load

            self._net = load(self.model_path)
        return self._net


def detect_file(job, index, path):
    """The JSON record of one image (``error`` set when it could not be read or detected),
    and its detections as (box, label, score)."""
    from . import draw, images
    from .detect import detect
    from .report_json import result_json

    record = {"image": path, "image_id": index}
    start = time.perf_counter()
    try:
        image = images.read(path, job.max_pixels)
        decoded = time.perf_counter()
        result = detect(image, job.net(), job.options, budget=job.budget)
        record.update(result_json(result, (decoded - start) * 1e3, (time.perf_counter() - start) * 1e3))
        if job.out_dir:
            _write_png(picture_path(job.out_dir, job.root, path), draw.boxes(image, result.detections, job.net().classes))
    except (ValueError, OSError) as error:
        return {"image": path, "image_id": index, "error": error_message(error)}, []
    return record, [(d.box, d.label, d.score) for d in result.detections]


def picture_path(out_dir, root, path):
    """Where --out-dir draws image ``path``: its path below ``root``, with ".png" added
    unless it is a PNG already (a.jpg and a.png do not meet)."""
    relative = os.path.relpath(os.path.abspath(path), root)
    return os.path.join(out_dir, relative if relative.lower().endswith(".png") else relative + ".png")


def _write_png(path, picture):
    import cv2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, picture):
        raise OSError(f"could not write {path}")


_JOB = None


def _start_worker(job):
    """A worker process: its kernel threads, and the model, loaded once."""
    global _JOB
    from . import heap
    from .threads import set_num_threads

    heap.retain()  # each image's arrays come from the heap, as the last image's went back to it
    if job.threads:
        set_num_threads(job.threads)
    _JOB = job
    job.net()


def _work(item):
    return detect_file(_JOB, *item)


def run(paths, job, jsonl=None, resume=False, workers=1, progress=True, on_record=None, scheduler=None):
    """Detect in every image of ``paths`` (already expanded); return a summary dict with
    ``images``, ``failed``, ``skipped`` and ``seconds``. Records stream to ``jsonl`` and to
    ``on_record(record)``."""
    from tqdm import tqdm

    from . import heap

    heap.retain()  # as in the workers: the images' arrays are reused from the heap
    skip = finished(jsonl) if jsonl and resume else set()
    todo = [(i, p) for i, p in enumerate(paths) if p not in skip]
    job.root = job.root or (os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else ".")
    start, failed = time.perf_counter(), 0
    out = open(jsonl, "a" if resume else "w", encoding="utf-8") if jsonl else None
    bar = tqdm(total=len(todo), desc="detect", unit="image", disable=not progress, dynamic_ncols=True)
    try:
        results = _dask_results(todo, job, scheduler) if scheduler else _results(todo, job, workers)
        for record, _ in results:
            failed += "error" in record
            if out:
                out.write(json.dumps(record) + "\n")
                out.flush()
            if on_record:
                on_record(record)
            bar.update()
            bar.set_postfix(errors=failed, refresh=False)
    finally:
        bar.close()
        if out:
            out.close()
    seconds = time.perf_counter() - start
    return {"images": len(todo), "failed": failed, "skipped": len(paths) - len(todo), "seconds": seconds,
            "images_per_s": len(todo) / seconds if seconds else 0.0}


def latest_records(jsonl_path):
    """The last record of each image in a JSONL file, in the order of the images' ids."""
    latest = {}
    with open(jsonl_path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            latest[record["image"]] = record
    return sorted(latest.values(), key=lambda r: r["image_id"])


# Images in one Dask task.
IMAGES_PER_DASK_TASK = 4

# Seconds to wait for a Dask scheduler to have a worker.
WORKERS_TIMEOUT = 10

# Images handed to the workers at once: enough to keep them busy, few enough that Ctrl-C or
# a failure drops little queued work, and that a batch of millions holds little memory.
IN_FLIGHT_PER_WORKER = 4


def _windowed(submit, todo, window, wait):
    """Results of ``submit(item)`` for every item, at most ``window`` submitted at a time,
    as they complete; ``wait(pending)`` returns (done, pending)."""
    items, pending = iter(todo), set()
    for item in items:
        pending.add(submit(item))
        if len(pending) >= window:
            break
    while pending:
        done, pending = wait(pending)
        for future in done:
            result = future.result()
            item = next(items, None)
            if item is not None:
                pending.add(submit(item))
            yield result


def _results(todo, job, workers):
    """(record, detections) of each image as it finishes."""
    if workers <= 1 or len(todo) <= 1:
        for index, path in todo:
            yield detect_file(job, index, path)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn: a fresh interpreter per worker, whatever threads this process has started
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(job,))
    try:
        yield from _windowed(lambda item: pool.submit(_work, item), todo, IN_FLIGHT_PER_WORKER * workers,
                             lambda pending: wait(pending, return_when=FIRST_COMPLETED))
    except BrokenProcessPool:
        raise RuntimeError("a worker process died; what finished is in the JSONL: run again with --resume") from None
    finally:  # on Ctrl-C or an error too: what is queued is dropped, not waited for
        pool.shutdown(wait=True, cancel_futures=True)


def _dask_results(todo, job, scheduler):
    """(record, detections) of each image as a Dask cluster finishes it: the model and the
    images reach the workers by path (a filesystem they share), a worker that dies has its
    images run again elsewhere."""
    import logging
    import uuid

    try:
        from distributed import Client, wait

        from .dask_worker import ModelOnWorker, detect_on_worker
    except ImportError:
        raise ValueError("--scheduler needs Dask: pip install 'detector[dask]'") from None
    logging.getLogger("distributed").setLevel(logging.CRITICAL)  # its errors reach us as one line
    try:
        client = Client(scheduler, timeout=5)
    except (OSError, TimeoutError) as error:
        raise ValueError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
        except (OSError, TimeoutError):
            raise ValueError(f"the Dask scheduler at {scheduler} has no workers") from None
        plugin = ModelOnWorker(job, f"detector-{uuid.uuid4().hex}")  # one per batch: several may share a cluster
        try:
            client.register_plugin(plugin)
        except Exception as error:  # whatever the workers raised while loading it
            raise ValueError(f"the Dask workers could not load the model {job.model_path}: {error}") from None
        workers = max(1, len(client.scheduler_info()["workers"]))
        # a few images a task: the scheduler's work per task, on the cores the workers need,
        # is paid once for them
        tasks = [todo[i:i + IMAGES_PER_DASK_TASK] for i in range(0, len(todo), IMAGES_PER_DASK_TASK)]
        try:
            for results in _windowed(
                    lambda items: client.submit(detect_on_worker, plugin.name, items, pure=False, retries=1),
                    tasks, IN_FLIGHT_PER_WORKER * workers,
                    lambda pending: wait(list(pending), return_when="FIRST_COMPLETED")):
                yield from results
        except (OSError, TimeoutError) as error:
            raise ValueError(f"lost the Dask scheduler at {scheduler} ({error}); what finished is in the JSONL: "
                             "run again with --resume") from None
        finally:
            try:
                client.unregister_worker_plugin(plugin.name)
            except Exception:  # the cluster may be gone: nothing left to clean
                pass
