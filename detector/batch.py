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
        elif glob.has_magic(path):
            matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
            if not matches:
                raise ValueError(f"no file matches {path}")
            found += matches
        elif os.path.isdir(path):
            images = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                            if name.lower().endswith(IMAGE_SUFFIXES))
            if not images:
                raise ValueError(f"{path} holds no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)})")
            found += images
        elif os.path.isfile(path):
            found.append(path)
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
    except (ValueError, OSError) as error:
        record["error"] = _message(error)
        return record, []
    record.update(result_json(result, (decoded - start) * 1e3, (time.perf_counter() - start) * 1e3))
    if job.out_dir:
        picture = os.path.join(job.out_dir, os.path.splitext(os.path.relpath(path, job.root))[0] + ".png")
        os.makedirs(os.path.dirname(picture), exist_ok=True)
        _write_png(picture, draw.boxes(image, result.detections, job.net().classes))
    return record, [(d.box, d.label, d.score) for d in result.detections]


def _message(error):
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__


def _write_png(path, picture):
    import cv2

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


def _dask_results(todo, job, scheduler):
    """(record, detections) of each image as a Dask cluster finishes it: the model and the
    images reach the workers by path (a filesystem they share), a worker that dies has its
    images run again elsewhere."""
    try:
        from distributed import Client, as_completed

        from .dask_worker import ModelOnWorker, detect_on_worker
    except ImportError:
        raise ValueError("--scheduler needs Dask: pip install 'detector[dask]'") from None
    try:
        client = Client(scheduler, timeout=5)
    except (OSError, TimeoutError) as error:
        raise ValueError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from None
    with client:
        try:
            client.register_plugin(ModelOnWorker(job))
        except Exception as error:  # whatever the workers raised while loading it
            raise ValueError(f"the Dask workers could not load the model {job.model_path}: {error}") from None
        futures = [client.submit(detect_on_worker, index, path, pure=False, retries=1) for index, path in todo]
        for future in as_completed(futures):
            yield future.result()


def run(paths, job, jsonl=None, resume=False, workers=1, progress=True, on_record=None, scheduler=None):
    """Detect in every image of ``paths`` (already expanded); return a summary dict with
    ``images``, ``failed``, ``skipped``, ``seconds`` and ``found`` [(image_id, detections)]
    of the images that succeeded. Records stream to ``jsonl`` and to ``on_record(record)``."""
    from tqdm import tqdm

    from . import heap

    heap.retain()  # as in the workers: the images' arrays are reused from the heap
    skip = finished(jsonl) if jsonl and resume else set()
    todo = [(i, p) for i, p in enumerate(paths) if p not in skip]
    job.root = job.root or (os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else ".")
    start, failed, found = time.perf_counter(), 0, []
    out = open(jsonl, "a" if resume else "w", encoding="utf-8") if jsonl else None
    bar = tqdm(total=len(todo), desc="detect", unit="image", disable=not progress, dynamic_ncols=True)
    try:
        results = _dask_results(todo, job, scheduler) if scheduler else _results(todo, job, workers)
        for record, detections in results:
            failed += "error" in record
            if "error" not in record:
                found.append((record["image_id"], detections))
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
            "images_per_s": len(todo) / seconds if seconds else 0.0, "found": sorted(found)}


def _results(todo, job, workers):
    """(record, detections) of each image as it finishes."""
    if workers <= 1 or len(todo) <= 1:
        for index, path in todo:
            yield detect_file(job, index, path)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a fresh interpreter per worker, whatever threads this process has started; a
    # worker that dies breaks the pool (BrokenProcessPool), rather than losing its image
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(job,)) as pool:
        for future in as_completed([pool.submit(_work, item) for item in todo]):
            yield future.result()
