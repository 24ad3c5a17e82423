"""Parallel and Ray localization: results identical to one process, in query order, none
lost or duplicated when a Ray actor dies; the memory-mapped map equals the one read whole."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pramloc import localize as loc_mod
from pramloc.errors import PramlocError
from pramloc.mapio import load_map
from pramloc.parallel import RAY_NAMESPACE, map_ordered, ray_actor_name, threads_per_worker

from .conftest import frame


def _state() -> dict:
    return {"pid": os.getpid()}


def _square(state: dict, x: int) -> tuple[int, int]:
    return x * x, state["pid"]


def _fail() -> dict:
    raise PramlocError("no map here")


def _die_on_three(state: dict, x: int) -> int:
    if x == 3:
        os._exit(1)  # as a worker killed by the OS
    return x


def test_map_ordered_processes_in_order():
    out = list(map_ordered(_state, _square, range(12), workers=2))
    assert [r for r, _ in out] == [x * x for x in range(12)]
    assert os.getpid() not in {pid for _, pid in out}
    assert list(map_ordered(_state, _square, [], workers=2)) == []
    assert threads_per_worker(1) >= threads_per_worker(2) >= 1


def test_short_lists_run_in_this_process():
    """Below ``min_items_per_worker`` items per worker, no process is started: 5 items at 4
    per worker run here, 8 run on 2 processes."""
    here = list(map_ordered(_state, _square, range(5), workers=2, min_items_per_worker=4))
    assert [r for r, _ in here] == [x * x for x in range(5)] and {pid for _, pid in here} == {os.getpid()}
    out = list(map_ordered(_state, _square, range(8), workers=2, min_items_per_worker=4))
    assert os.getpid() not in {pid for _, pid in out}


def _counted(n: int, seen: list):
    for x in range(n):
        seen.append(x)
        yield x


def test_lazy_items_are_read_as_they_are_sent():
    """A lazy iterator (e.g. image bytes for --send bytes) is never held whole: when the first
    result arrives, only a few items per worker have been read."""
    from pramloc.parallel import IN_FLIGHT

    seen: list = []
    results = map_ordered(_state, _square, _counted(40, seen), workers=2)
    assert next(results)[0] == 0
    assert len(seen) <= IN_FLIGHT * 2 + 1
    assert [r for r, _ in results] == [x * x for x in range(1, 40)] and len(seen) == 40


def test_worker_process_that_dies_is_an_error_not_a_hang():
    with pytest.raises(PramlocError, match="worker process died"):
        list(map_ordered(_state, _die_on_three, range(8), workers=2))


def test_worker_that_cannot_start_is_one_error():
    with pytest.raises(PramlocError, match="no map here"):
        list(map_ordered(_fail, _square, range(4), workers=2))


@pytest.fixture(scope="module")
def queries(kitchen_root):
    """Ten real query frames not in the small map."""
    names = [frame(i) for i in range(3, 63, 6)]
    from pramloc.datasets import load_dataset

    scene = load_dataset("7scenes", kitchen_root, None)
    return [(n, scene.path(n), scene[n].camera) for n in names]


@pytest.fixture(scope="module")
def serial_results(kitchen_map, queries, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("serial") / "r.txt"
    loc_mod.main(kitchen_map, queries, out, mode="retrieval", workers=1)
    return out.read_bytes()


def test_workers_results_identical(kitchen_map, queries, serial_results, tmp_path):
    assert serial_results.count(b"\n") >= 5  # most queries localize on the small map
    s = loc_mod.main(kitchen_map, queries, tmp_path / "r.txt", mode="retrieval", workers=2)
    assert (tmp_path / "r.txt").read_bytes() == serial_results
    assert s["queries"] == len(queries) and s["workers"] == 2
    names = [json.loads(line)["name"] for line in (tmp_path / "r_log.jsonl").read_text().splitlines()]
    assert names == [n for n, _, _ in queries]  # the log too, in query order


def test_lazy_map_equals_map_read_whole(kitchen_map):
    whole, lazy = load_map(kitchen_map), load_map(kitchen_map, lazy=True)
    assert isinstance(lazy.xyz, np.memmap) and isinstance(lazy.image_points, np.memmap)
    np.testing.assert_array_equal(np.asarray(lazy.descriptors), whole.descriptors)
    idx = np.array([5, 0, 17, 5])
    np.testing.assert_array_equal(lazy.descriptors[idx], whole.descriptors[idx])
    np.testing.assert_array_equal(lazy.descriptors[3], whole.descriptors[3])
    np.testing.assert_array_equal(lazy.image_points, whole.image_points)
    np.testing.assert_array_equal(lazy.landmark_offsets, whole.landmark_offsets)
    # The stored tracks are the inverse of the observations (and computed for maps without them).
    pts = np.unique(whole.image_points)[::7]
    obs_image = np.repeat(np.arange(len(whole.image_names)), np.diff(whole.image_offsets))
    expected = np.sort(obs_image[np.isin(whole.image_points, pts)])
    np.testing.assert_array_equal(np.sort(lazy.point_images(pts)), expected)
    whole.tracks = None
    np.testing.assert_array_equal(np.sort(whole.point_images(pts)), expected)


def test_ray_missing_says_how_to_install(kitchen_map, queries, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(PramlocError, match=r"pip install 'pramloc\[ray\]'"):
        loc_mod.main(kitchen_map, queries, tmp_path / "r.txt", mode="retrieval", workers=2, ray=True)


def test_unreachable_ray_address_is_one_error():
    """Nothing listens at the address: one error at once (Ray alone retries for minutes)."""
    import socket

    ray = pytest.importorskip("ray", reason="Ray is optional (pip install 'pramloc[ray]')")
    from pramloc.parallel import ray_init

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    assert not ray.is_initialized()
    with pytest.raises(PramlocError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        ray_init(f"127.0.0.1:{port}")
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is optional (pip install 'pramloc[ray]')")
    from pramloc.parallel import ray_init

    ray_init(num_cpus=2)
    yield ray
    ray.shutdown()


def test_ray_results_identical(ray_cluster, kitchen_map, queries, serial_results, tmp_path):
    """Queries sent as image bytes (workers that do not share the storage)."""
    loc_mod.main(kitchen_map, queries, tmp_path / "r.txt", mode="retrieval", workers=2, ray=True, send_bytes=True)
    assert (tmp_path / "r.txt").read_bytes() == serial_results


def _counted_localizer(log: Path, map_path: Path) -> loc_mod.Localizer:
    with open(log, "a") as f:  # one line per worker (re)start
        f.write("start\n")
    return loc_mod.Localizer(map_path, "retrieval")


def test_ray_reads_lazy_items_as_sent(ray_cluster):
    from pramloc.parallel import IN_FLIGHT

    seen: list = []
    results = map_ordered(_state, _square, _counted(30, seen), workers=2, ray=True)
    try:
        assert next(results)[0] == 0
        # Actors may finish later items first, but at most 2 * IN_FLIGHT per actor are out or
        # waiting for a slow first item: far from all.
        assert len(seen) <= 2 * IN_FLIGHT * 2 + 1
        assert [r for r, _ in results] == [x * x for x in range(1, 30)] and len(seen) == 30
    finally:
        results.close()  # its actors gone even if an assertion failed (their names are reused)


def _slow_first(state: dict, x: int) -> tuple[int, int]:
    if x == 0:
        time.sleep(2)
    return _square(state, x)


def test_ray_slow_first_item_bounds_the_window(ray_cluster):
    """The other actor finishes many items while the first one runs: they wait in a bounded
    window, and every item still comes back once, in order, when the window drains."""
    from pramloc.parallel import IN_FLIGHT

    seen: list = []
    results = map_ordered(_state, _slow_first, _counted(40, seen), workers=2, ray=True)
    try:
        assert next(results)[0] == 0 and len(seen) <= 2 * IN_FLIGHT * 2 + 1
        assert [r for r, _ in results] == [x * x for x in range(1, 40)] and len(seen) == 40
    finally:
        results.close()


def test_ray_actor_killed_mid_run(ray_cluster, kitchen_map, queries, serial_results, tmp_path):
    ray = ray_cluster
    starts = tmp_path / "starts.txt"
    make = functools.partial(_counted_localizer, starts, kitchen_map)
    results = []
    for r in map_ordered(make, loc_mod._localize_item, queries, workers=2, ray=True):
        results.append(r)
        if len(results) == 2:  # kill one actor while it holds queries
            ray.kill(ray.get_actor(ray_actor_name(0), namespace=RAY_NAMESPACE), no_restart=False)
    assert [r.name for r in results] == [n for n, _, _ in queries]  # each exactly once, in order
    assert starts.read_text().count("start") == 3  # 2 actors, the killed one restarted
    loc_mod.write_results(results, tmp_path / "r.txt")
    assert (tmp_path / "r.txt").read_bytes() == serial_results


@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_build_with_workers_same_map(backend, kitchen_root, kitchen_split, kitchen_map, tmp_path, request,
                                    monkeypatch):
    """Feature extraction and pair matching on 2 processes or Ray actors: the same map as
    on one (the session's kitchen_map, built serially with the same settings)."""
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
    import pramloc.features
    import pramloc.sfm

    # this small scene would otherwise run in this process (too few items to pay for workers)
    monkeypatch.setattr(pramloc.features, "MIN_IMAGES_PER_WORKER", 1)
    monkeypatch.setattr(pramloc.sfm, "MIN_PAIRS_PER_WORKER", 1)
    import h5py

    from pramloc import build
    from pramloc.config import load_config
    from pramloc.datasets import load_dataset

    conf = load_config("indoor", ["landmarks.num_landmarks=8", "landmarks.min_points_per_landmark=10",
                                     "triangulation.num_pairs=5"])
    out = tmp_path / "kitchen2"
    build.main(conf, load_dataset("7scenes", kitchen_root, kitchen_split), out, train=False, workers=2,
               ray=backend == "ray")
    with h5py.File(kitchen_map / "map.h5") as a, h5py.File(out / "map.h5") as b:
        names = []
        a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for n in names:
            np.testing.assert_array_equal(a[n][()], b[n][()], err_msg=n)


CHILD = """
import sys, time
from pramloc.parallel import map_ordered

def make():
    return None

def slow(state, x):
    time.sleep(60)
    return x

if __name__ == "__main__":
    list(map_ordered(make, slow, range(4), workers=2))
"""


def test_workers_end_with_a_killed_parent(tmp_path):
    """A ``pramloc`` command killed mid-run (SIGKILL: no clean-up) leaves no worker behind."""
    import signal
    import subprocess
    import time

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        workers: list[str] = []
        for _ in range(600):  # the two workers started and initialised
            time.sleep(0.1)
            kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            workers = [k for k in kids if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text(errors="replace")
                       and "resource_tracker" not in Path(f"/proc/{k}/cmdline").read_text(errors="replace")]
            if len(workers) == 2:
                break
        assert len(workers) == 2
        time.sleep(3)  # past their initializer
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    for _ in range(300):
        if not any(Path(f"/proc/{k}").exists() for k in workers):
            break
        time.sleep(0.1)
    assert not any(Path(f"/proc/{k}").exists() for k in workers)
