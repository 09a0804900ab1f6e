"""``detector bench serve``: served throughput and latency under concurrent load, beside the
in-process throughput of detect on the same images."""
import json
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import cv2
import grpc

import detector

from .client import DetectorClient


def _start_server_process(workers=None):
    command = [sys.executable, "-m", "detector", "serve", "--port", "0"]
    if workers:
        command += ["--workers", str(workers)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return process, line.split()[-1]


def _percentile(values, q):
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
        process, address = _start_server_process()
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
                             "p50_ms": _percentile(latencies, 50) * 1e3, "p95_ms": _percentile(latencies, 95) * 1e3,
                             "p99_ms": _percentile(latencies, 99) * 1e3, "status": dict(codes)})
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
    return {"address": address, "mode": mode, "size": list(size), "in_process_rps": in_process,
            "in_process_threads": detector.get_num_threads(), "runs": rows}


def format_table(result):
    lines = [f"detector bench serve: {result['mode']} on {result['size'][0]}x{result['size'][1]} PNG scenes, "
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
    concurrency = tuple(int(c) for c in args.concurrency.split(","))
    width, height = (int(v) for v in args.size.lower().split("x"))
    if min(concurrency) < 1 or args.requests < 1:
        raise ValueError("concurrency and requests must be at least 1")
    result = run(args.addr, concurrency, args.requests, args.mode, (width, height))
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
