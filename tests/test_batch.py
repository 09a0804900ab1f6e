"""Batch detection: paths expanded, one record per image streamed, failures recorded, runs
resumed, and the same results from worker processes as from one."""
import json
import os

import cv2
import numpy as np
import pytest

import detector
from detector.batch import expand, finished
from detector.cli import main
from detector.datasets import digits


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four small digit scenes (one in a subfolder), a corrupt PNG and a text file."""
    root = tmp_path_factory.mktemp("batch")
    (root / "sub").mkdir()
    for i, name in enumerate(["a.png", "b.jpg", "c.png", "sub/d.png"]):
        image, _, _ = digits.scene(i, size=(160, 120))
        cv2.imwrite(str(root / name), image)
    (root / "broken.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("not an image either")
    return root


def records(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_folders_globs_and_lists_expand_to_each_image_once(folder, tmp_path):
    everything = expand([str(folder)])
    assert [os.path.relpath(p, folder) for p in everything] == ["a.png", "b.jpg", "broken.png", "c.png",
                                                                os.path.join("sub", "d.png")]
    assert expand([str(folder / "*.png"), str(folder / "a.png")]) == [str(folder / n) for n in ("a.png", "broken.png", "c.png")]
    assert len(expand([str(folder / "**" / "*.png")])) == 4
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two images\n{folder / 'c.png'}\n\n{os.path.relpath(folder / 'a.png', tmp_path)}\n")
    assert expand([f"@{listing}"]) == [str(folder / "c.png"), os.path.join(str(tmp_path), os.path.relpath(folder / "a.png", tmp_path))]


@pytest.mark.parametrize("make, message", [
    (lambda d: [str(d / "nothing.png")], "nothing.png: no such file or folder"),
    (lambda d: [str(d / "empty")], "holds no images"),
    (lambda d: [str(d / "*.gif")], r"no file matches .*\*\.gif"),
    (lambda d: [f"@{d / 'missing.txt'}"], "no such list file"),
    (lambda d: [f"@{d / 'bad.txt'}"], r"bad.txt, line 2: gone.png: no such file"),
    (lambda d: [f"@{d / 'blank.txt'}"], "lists no images"),
])
def test_paths_that_name_nothing_are_refused_by_name(tmp_path, make, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.txt").write_text("# comment\ngone.png\n")
    (tmp_path / "blank.txt").write_text("\n# nothing\n")
    with pytest.raises(ValueError, match=message):
        expand(make(tmp_path))


def test_a_batch_streams_a_record_per_image_and_goes_on_after_a_bad_one(folder, tmp_path, capsys):
    jsonl, coco, pictures = tmp_path / "out.jsonl", tmp_path / "coco.json", tmp_path / "drawn"
    pictures.mkdir()
    status = main(["detect", str(folder), "--jsonl", str(jsonl), "--coco-json", str(coco), "--out-dir", str(pictures),
                   "--no-progress"])
    assert status == 2  # one image failed
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "5 images" in err and "1 failed" in err
    got = {os.path.relpath(r["image"], folder): r for r in records(jsonl)}
    assert sorted(got) == ["a.png", "b.jpg", "broken.png", "c.png", os.path.join("sub", "d.png")]
    assert "not a PNG" in got["broken.png"]["error"]
    net = detector.load_model()
    for name, record in got.items():
        if name == "broken.png":
            continue
        image = cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED)
        expected = detector.detect(image, net).detections
        assert [d["label"] for d in record["detections"]] == [d.label for d in expected]
        np.testing.assert_allclose([d["box"] + [d["score"]] for d in record["detections"]],
                                   [[*d.box, d.score] for d in expected], rtol=1e-6)
        assert (pictures / (name if name.endswith(".png") else name + ".png")).exists()
    results = json.loads(coco.read_text())
    expected_ids = sorted(r["image_id"] for r in got.values() for _ in r.get("detections", []))
    assert sorted(r["image_id"] for r in results) == expected_ids and results


def test_resume_keeps_what_finished_and_cuts_a_partial_line(folder, tmp_path):
    jsonl = tmp_path / "out.jsonl"
    assert main(["detect", str(folder / "a.png"), str(folder / "c.png"), "--jsonl", str(jsonl), "--no-progress"]) == 0
    first = records(jsonl)
    with open(jsonl, "a") as f:
        f.write('{"image": "half a rec')  # a run killed in the middle of a line
    assert finished(jsonl) == {r["image"] for r in first}
    assert main(["detect", str(folder / "a.png"), str(folder / "c.png"), str(folder / "b.jpg"), "--jsonl", str(jsonl),
                 "--resume", "--no-progress"]) == 0
    after = records(jsonl)
    assert after[:2] == first and [r["image"] for r in after[2:]] == [str(folder / "b.jpg")]


def test_coco_results_cover_the_images_of_the_runs_resumed(folder, tmp_path):
    jsonl, coco = tmp_path / "out.jsonl", tmp_path / "coco.json"
    paths = [str(folder / "a.png"), str(folder / "c.png")]
    assert main(["detect", paths[0], "--jsonl", str(jsonl), "--no-progress"]) == 0
    assert main(["detect", *paths, "--jsonl", str(jsonl), "--resume", "--coco-json", str(coco), "--no-progress"]) == 0
    got = records(jsonl)
    counts = {i: len(r["detections"]) for i, r in enumerate(got)}
    assert [r["image"] for r in got] == paths and all(counts.values())
    ids = [r["image_id"] for r in json.loads(coco.read_text())]
    assert {i: ids.count(i) for i in set(ids)} == counts


def test_pictures_of_images_with_one_name_do_not_meet(tmp_path):
    image, _, _ = digits.scene(0, size=(120, 90))
    for name in ("a.png", "a.jpg", "photo[1].png"):
        cv2.imwrite(str(tmp_path / name), image)
    drawn = tmp_path / "drawn"
    drawn.mkdir()
    assert main(["detect", str(tmp_path / "a.png"), str(tmp_path / "a.jpg"), str(tmp_path / "photo[1].png"),
                 "--out-dir", str(drawn), "--no-progress"]) == 0
    assert sorted(os.listdir(drawn)) == ["a.jpg.png", "a.png", "photo[1].png"]


def test_worker_processes_give_the_same_records(folder, tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert main(["detect", str(folder), "--jsonl", str(one), "--no-progress"]) == 2
    assert main(["detect", str(folder), "--jsonl", str(two), "--workers", "2", "--no-progress"]) == 2
    strip = lambda r: {k: v for k, v in r.items() if k != "timings_ms"}  # noqa: E731
    assert sorted(map(strip, records(one)), key=lambda r: r["image"]) == \
        sorted(map(strip, records(two)), key=lambda r: r["image"])


@pytest.mark.parametrize("extra, message", [
    (["--out", "x.png"], "--out draws one image; a batch writes its pictures with --out-dir"),
    (["--resume"], "--resume needs --jsonl"),
    (["--out-dir", "/nonexistent/folder"], "--out-dir /nonexistent/folder: no such folder"),
    (["--model", "/nonexistent/model.npz"], "no checkpoint at /nonexistent/model.npz"),
])
def test_bad_batch_options_are_one_line(folder, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_:
        main(["detect", str(folder), "--no-progress", *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_batch_without_jsonl_prints_a_line_per_image(folder, capsys):
    assert main(["detect", str(folder / "a.png"), str(folder / "broken.png"), "--no-progress"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{folder / 'a.png'}: ") and "detections in" in out[0]
    assert out[1].startswith("error: ") and "broken.png" in out[1]
    assert main(["detect", str(folder / "a.png"), str(folder / "c.png"), "--json", "--no-progress"]) == 0
    assert [json.loads(line)["image"] for line in capsys.readouterr().out.splitlines()] == \
        [str(folder / "a.png"), str(folder / "c.png")]


@pytest.fixture(scope="module")
def cluster():
    """A Dask LocalCluster of 2 worker processes on loopback: its scheduler's address."""
    distributed = pytest.importorskip("distributed")
    local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                     host="127.0.0.1")
    yield local.scheduler_address
    local.close()


def test_a_dask_cluster_gives_the_same_records_as_one_process(folder, tmp_path, cluster):
    one, dask = tmp_path / "one.jsonl", tmp_path / "dask.jsonl"
    assert main(["detect", str(folder), "--jsonl", str(one), "--no-progress"]) == 2
    assert main(["detect", str(folder), "--jsonl", str(dask), "--scheduler", cluster, "--no-progress"]) == 2
    strip = lambda r: {k: v for k, v in r.items() if k != "timings_ms"}  # noqa: E731
    assert sorted(map(strip, records(one)), key=lambda r: r["image"]) == \
        sorted(map(strip, records(dask)), key=lambda r: r["image"])


@pytest.mark.parametrize("extra, message", [
    (["--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler at tcp://127.0.0.1:9"),
    (["--scheduler", "tcp://127.0.0.1:9", "--workers", "2"], "--workers and --scheduler both say where to run"),
])
def test_a_scheduler_that_cannot_serve_is_one_line(folder, capsys, extra, message):
    pytest.importorskip("distributed")
    with pytest.raises(SystemExit) as exit_:
        main(["detect", str(folder / "a.png"), "--no-progress", *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_dask_worker_that_dies_has_its_images_run_again(folder, tmp_path, cluster):
    import signal

    from distributed import Client

    from detector.batch import Job, run
    from detector.budget import Budget
    from detector.detect import DetectOptions

    paths = [str(folder / n) for n in ("a.png", "b.jpg", "c.png")]  # and 24 copies: a run of a few seconds
    for i in range(24):
        (tmp_path / f"copy{i}.png").write_bytes((folder / "a.png").read_bytes())
        paths.append(str(tmp_path / f"copy{i}.png"))
    with Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
    killed = []

    def kill_once(record):
        if not killed:
            killed.append(pids[0])
            os.kill(pids[0], signal.SIGKILL)  # a worker dies in the middle of the batch

    job = Job(str(detector.DEFAULT_MODEL), DetectOptions(), Budget(), 50_000_000)
    summary = run(paths, job, str(tmp_path / "out.jsonl"), progress=False, on_record=kill_once, scheduler=cluster)
    assert killed and summary["failed"] == 0
    assert sorted(r["image"] for r in records(tmp_path / "out.jsonl")) == sorted(paths)


def test_a_model_the_dask_workers_cannot_read_is_one_clear_error(folder, tmp_path, cluster):
    from detector.batch import Job, run
    from detector.budget import Budget
    from detector.detect import DetectOptions

    job = Job(str(tmp_path / "only-here.npz"), DetectOptions(), Budget(), 50_000_000)
    with pytest.raises(ValueError, match="the Dask workers could not load the model .*only-here.npz"):
        run([str(folder / "a.png")], job, progress=False, scheduler=cluster)


def test_a_scheduler_without_workers_is_refused_not_waited_on(folder, capsys, monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr("detector.batch.WORKERS_TIMEOUT", 1)
    empty = distributed.LocalCluster(n_workers=0, dashboard_address=":0", host="127.0.0.1")
    try:
        with pytest.raises(SystemExit):
            main(["detect", str(folder / "a.png"), "--scheduler", empty.scheduler_address, "--no-progress"])
    finally:
        empty.close()
    assert "has no workers" in capsys.readouterr().err
