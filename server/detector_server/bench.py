"""``detector bench serve``: served throughput and latency under concurrent load, beside the
in-process throughput of detect on the same images.

The JSON keeps the vocabulary of :mod:`detector.report_json`: ``image_size`` as
``{"width", "height"}``, durations in milliseconds under keys ending in ``_ms``.
"""
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import cv2
import grpc

import detector
from detector.report_json import size_json

from .client import DetectorClient


def start_server_process(*flags):
    """A ``detector serve --port 0 FLAGS...`` process on a free loopback port, and its
    address. Its log goes to a file, not a pipe nobody reads (which would fill and stall the
    server)."""
    command = [sys.executable, "-m", "detector", "serve", "--port", "0", *flags]
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        process.wait()
        log.seek(0)
        said = [text.strip() for text in log if text.strip()]
        log.close()
        raise OSError(f"the benchmark's server did not start: {said[-1] if said else line.strip() or 'no output'}")
    process.log = log
    return process, line.split()[-1]


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run(address=None, concurrency=(1, 4, 16), requests=200, mode="fcn", size=(640, 480), images=8):
    from detector.datasets import digits

    scenes = [digits.scene(1000 + i, size=size)[0] for i in range(images)]
    encoded = [cv2.imencode(".png", s)[1].tobytes() for s in scenes]
    net = detector.load_model()
    count = max(images, requests // 4)
    start = time.perf_counter()
    for i in range(count):
        detector.detect(cv2.imdecode(cv2.imencode(".png", scenes[i % images])[1], cv2.IMREAD_UNCHANGED), net, mode=mode)
    in_process = count / (time.perf_counter() - start)

    process = None
    if address is None:
        process, address = start_server_process()
    rows = []
    try:
        with DetectorClient(address, timeout=120) as client:
            client.model_info()
            for c in concurrency:
                latencies, codes = [], Counter()

                def one(i):
                    t = time.perf_counter()
                    try:
                        client.detect(encoded[i % images], mode=mode)
                        codes["OK"] += 1
                    except grpc.RpcError as error:
                        codes[error.code().name] += 1
                    latencies.append(time.perf_counter() - t)

                start = time.perf_counter()
                with ThreadPoolExecutor(c) as pool:
                    list(pool.map(one, range(requests)))
                wall = time.perf_counter() - start
                rows.append({"concurrency": c, "requests": requests, "rps": requests / wall,
                             "ratio_to_in_process": requests / wall / in_process,
                             "p50_ms": percentile(latencies, 50) * 1e3, "p95_ms": percentile(latencies, 95) * 1e3,
                             "p99_ms": percentile(latencies, 99) * 1e3, "status": dict(codes)})
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
            process.log.close()
    return {"address": address, "mode": mode, "image_size": size_json(*size), "in_process_rps": in_process,
            "in_process_threads": detector.get_num_threads(), "runs": rows}


def format_table(result):
    size = result["image_size"]
    lines = [f"detector bench serve: {result['mode']} on {size['width']}x{size['height']} PNG scenes, "
             f"server {result['address']}",
             f"in-process detect: {result['in_process_rps']:.2f} images/s "
             f"(one call at a time, {result['in_process_threads']} kernel threads)", "",
             f"{'clients':>8}{'requests':>10}{'req/s':>9}{'/in-process':>13}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}  status"]
    for r in result["runs"]:
        lines.append(f"{r['concurrency']:>8}{r['requests']:>10}{r['rps']:>9.2f}{r['ratio_to_in_process']:>13.2f}"
                     f"{r['p50_ms']:>9.0f}{r['p95_ms']:>9.0f}{r['p99_ms']:>9.0f}  "
                     + ", ".join(f"{k} {v}" for k, v in sorted(r["status"].items())))
    return "\n".join(lines)


def main(args):
    """``detector bench serve``: ``args.concurrency`` a tuple of counts and ``args.size``
    (width, height), as the parser gives them."""
    if min(args.concurrency) < 1 or args.requests < 1:
        raise ValueError("concurrency and requests must be at least 1")
    result = run(args.addr, args.concurrency, args.requests, args.mode, args.size)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
