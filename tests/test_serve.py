"""``pramloc serve``: a real server process on a free port, talked to over HTTP (httpx).

Small real maps (7-Scenes kitchen frames, Strecha Herz-Jesu facade); poses compared with
``pramloc localize IMAGE`` to the last bit; every refusal (token, size, pixels, not an
image, unknown map) a clean JSON answer; a worker killed mid-run; SIGTERM mid-request.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import struct
import subprocess
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from click.testing import CliRunner

from pramloc.cli import main as cli
from pramloc.io import pose_line

from .conftest import frame
from .helpers import CLI, ENV, KITCHEN_CAMERA

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STRECHA_QUERY = "images/0001.jpg"
KITCHEN_QUERIES = [frame(i) for i in (3, 9, 15, 21, 27, 33, 39)]


# ---------------------------------------------------------------- a server process


@dataclass
class Server:
    """A ``pramloc serve`` process and its URL; its output lines are collected as they come."""

    proc: subprocess.Popen
    url: str
    lines: list[str] = field(default_factory=list)

    def worker_pids(self) -> list[int]:
        """The localization workers ('spawn' children; not multiprocessing's resource tracker)."""
        kids = psutil.Process(self.proc.pid).children()
        return [p.pid for p in kids if "spawn_main" in " ".join(p.cmdline())]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def start_server(maps: list[Path], *args: str, timeout: float = 180) -> Server:
    """Start ``pramloc serve MAPS --port 0 ARGS`` and wait for its ready line."""
    proc = subprocess.Popen(CLI + ["serve", *map(str, maps), "--port", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV)
    lines: queue.Queue = queue.Queue()
    collected: list[str] = []

    def read():
        for line in proc.stdout:
            collected.append(line.rstrip("\n"))
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        if line.startswith("pramloc serve: http://"):
            return Server(proc, line.split()[2], collected)
    proc.kill()
    raise AssertionError("server did not start:\n" + "\n".join(collected))


def cli_pose(map_path: Path, image: Path, tmp_path: Path, camera: str | None = None) -> tuple[str, dict]:
    """``pramloc localize MAP IMAGE [--camera]``: its results line and log record."""
    out = tmp_path / f"cli_{image.stem}.txt"
    args = ["-q", "localize", str(map_path), str(image), "--out", str(out)] + (["--camera", camera] if camera else [])
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    record = json.loads(out.with_name(out.stem + "_log.jsonl").read_text())
    return out.read_text(), record


def server_line(answer: dict, name: str) -> str:
    """The results line of a server answer (as ``pramloc.io.pose_line`` writes it)."""
    from pramloc.geometry import Pose

    import numpy as np

    return pose_line(name, Pose(np.array(answer["qvec"]), np.array(answer["tvec"])))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def strecha_map(tmp_path_factory, strecha_root) -> Path:
    """A small real Strecha map: 3 facade images at 640 px, without recognizer."""
    from pramloc import build
    from pramloc.config import load_config
    from pramloc.datasets import load_dataset

    split = tmp_path_factory.mktemp("strecha_split") / "db.txt"
    split.write_text("images/0000.jpg\nimages/0002.jpg\nimages/0004.jpg\n")
    out = tmp_path_factory.mktemp("maps_serve") / "herzjesu"
    conf = load_config("outdoor", ["features.max_side=640", "landmarks.num_landmarks=6",
                                   "landmarks.min_points_per_landmark=10", "triangulation.num_pairs=5"])
    build.main(conf, load_dataset("strecha", strecha_root, split), out, train=False)
    return out


@pytest.fixture(scope="module")
def server(kitchen_map, strecha_map):
    """Both maps, two workers, a token."""
    s = start_server([kitchen_map, strecha_map], "--workers", "2", "--token", TOKEN)
    yield s
    assert s.stop() == 0, "\n".join(s.lines)


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def localize(client: httpx.Client, map_name: str, path: Path, **params) -> httpx.Response:
    return client.post(f"/v1/maps/{map_name}/localize", content=path.read_bytes(), params=params, headers=AUTH)


# ---------------------------------------------------------------- tests


def test_maps_health_metrics_and_docs(client, kitchen_map, strecha_map):
    from pramloc.mapio import read_manifest

    r = client.get("/v1/maps", headers=AUTH)
    assert r.status_code == 200
    maps = {m["name"]: m for m in r.json()["maps"]}
    assert set(maps) == {"kitchen", "herzjesu"}
    man = read_manifest(kitchen_map)
    k = maps["kitchen"]
    assert (k["images"], k["points"], k["landmarks"]) == (8, man["counts"]["points"], 8)
    assert k["features"] == "sift" and k["pramloc_version"] == man["pramloc_version"] and k["recognizer"] is False
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["workers"] == 2 and set(h["maps"]) == {"kitchen", "herzjesu"}
    spec = client.get("/openapi.json").json()
    assert {"/v1/maps", "/v1/maps/{name}/localize", "/v1/maps/{name}/localize/batch"} <= set(spec["paths"])
    docs = client.get("/docs").text
    assert "swagger-ui-bundle.js" in docs and "https://" not in docs  # served by the server itself
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    metrics = client.get("/metrics").text
    assert "pramloc_workers 2.0" in metrics and "pramloc_http_requests_total" in metrics


def test_kitchen_pose_identical_to_cli(client, kitchen_map, kitchen_root, tmp_path):
    image = kitchen_root / frame(21)
    line, record = cli_pose(kitchen_map, image, tmp_path, KITCHEN_CAMERA)
    r = localize(client, "kitchen", image, camera=KITCHEN_CAMERA, name=record["name"])
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["success"] and server_line(a, record["name"]) == line  # the CLI's results line
    assert a["qvec"] == record["pose"]["qvec"] and a["tvec"] == record["pose"]["tvec"]  # to the last bit
    assert (a["path"], a["num_inliers"], a["num_matches"]) == (record["path"], record["num_inliers"],
                                                               record["num_matches"])
    assert a["intrinsics"] == {"source": "given", "camera": KITCHEN_CAMERA, "focal": record["focal"],
                               "focal_initial": None}
    assert set(a["times_ms"]) >= {"features", "matching", "pnp"} and a["time_total_ms"] > 0
    import numpy as np

    from pramloc.geometry import Pose

    assert np.allclose(a["center"], Pose(np.array(a["qvec"]), np.array(a["tvec"])).center)
    # The same image as a multipart file with the camera as a form field: the same answer.
    m = client.post("/v1/maps/kitchen/localize", files={"image": (image.name, image.read_bytes(), "image/jpeg")},
                    data={"camera": KITCHEN_CAMERA}, headers=AUTH).json()
    assert m["name"] == image.name and (m["qvec"], m["tvec"]) == (a["qvec"], a["tvec"])


def test_strecha_pose_identical_to_cli_without_camera(client, strecha_map, strecha_root, tmp_path):
    image = strecha_root / STRECHA_QUERY
    line, record = cli_pose(strecha_map, image, tmp_path)
    r = client.post("/v1/maps/herzjesu/localize", files={"image": (STRECHA_QUERY, image.read_bytes())},
                    data={"name": record["name"]}, headers=AUTH)
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["success"] and server_line(a, record["name"]) == line
    assert a["qvec"] == record["pose"]["qvec"] and a["tvec"] == record["pose"]["tvec"]
    # Intrinsics estimated as the CLI does (EXIF, else the guess), focal refined in PnP.
    assert a["intrinsics"]["source"] == record["intrinsics"] and a["intrinsics"]["camera"] is None
    assert a["intrinsics"]["focal"] == record["focal"] and a["intrinsics"]["focal_initial"] == record["focal_initial"]


def test_batch_answers_each_image_in_order(client, kitchen_root):
    names = KITCHEN_QUERIES[:2]
    files = [("images", (n, (kitchen_root / n).read_bytes(), "image/jpeg")) for n in names]
    files.append(("images", ("notes.txt", b"not an image at all\n", "text/plain")))
    r = client.post("/v1/maps/kitchen/localize/batch", files=files, data={"camera": KITCHEN_CAMERA}, headers=AUTH)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["name"] for x in res] == names + ["notes.txt"]
    assert [x["status"] for x in res] == [200, 200, 422] and "not an image" in res[2]["error"]
    for n, x in zip(names, res):
        one = localize(client, "kitchen", kitchen_root / n, camera=KITCHEN_CAMERA, name=n).json()
        assert (x["qvec"], x["tvec"]) == (one["qvec"], one["tvec"])
    too_many = [("images", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(33)]
    r = client.post("/v1/maps/kitchen/localize/batch", files=too_many, headers=AUTH)
    assert r.status_code == 400 and "32" in r.json()["error"]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class _Raw:
    """The answer of :func:`raw_post` with httpx.Response's ``status_code``, ``json``, ``headers``."""

    def __init__(self, status: int, body: bytes, headers: dict):
        self.status_code, self.text, self.headers = status, body.decode(), headers

    def json(self):
        return json.loads(self.text)


def raw_post(url: str, path: str, body: bytes) -> _Raw:
    """POST to ``path`` exactly as written (no '..' normalization), with the token."""
    import http.client

    host, port = httpx.URL(url).host, httpx.URL(url).port
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers=AUTH)
        r = conn.getresponse()
        return _Raw(r.status, r.read(), {k.lower(): v for k, v in r.getheaders()})
    finally:
        conn.close()


def test_refusals_are_clean_json_and_the_server_goes_on(client, server, kitchen_root):
    image = kitchen_root / frame(3)
    jpeg = image.read_bytes()

    def refused(r: httpx.Response, status: int, *words: str) -> str:
        assert r.status_code == status, (r.status_code, r.text)
        body = r.json()
        assert body["status"] == status and "\n" not in body["error"], body
        assert all(w in body["error"] for w in words), body["error"]
        return body["error"]

    url = "/v1/maps/kitchen/localize"
    # Token: none, wrong, wrong scheme.
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        r = client.post(url, content=jpeg, headers=headers)
        refused(r, 401, "token")
        assert r.headers["www-authenticate"] == "Bearer"
    refused(client.get("/v1/maps"), 401, "token")
    # Size: by Content-Length, and streamed (chunked, no length) past the limit.
    refused(client.post(url, content=b"\xff" * 30_000_000, headers=AUTH), 413, "25,000,000")

    def chunks():
        for _ in range(30):
            yield b"\0" * 1_000_000

    refused(client.post(url, content=chunks(), headers=AUTH), 413, "limit")
    # Not images, broken images, decompression bombs.
    refused(client.post(url, content=b"", headers=AUTH), 422, "empty")
    refused(client.post(url, content=b"hello, this is a text file\n" * 10, headers=AUTH), 422, "not an image", "text")
    refused(client.post(url, content=jpeg[: len(jpeg) // 2], headers=AUTH), 422, "truncated")
    refused(client.post(url, content=png_header_only(100_000, 100_000), headers=AUTH), 422, "10,000,000,000 pixels")
    refused(client.post(url, content=png_header_only(10_000, 6_000), headers=AUTH), 422, "10000x6000", "50,000,000")
    # Bad intrinsics.
    refused(client.post(url, content=jpeg, params={"camera": "PINHOLE 640"}, headers=AUTH), 422, "bad camera")
    refused(client.post(url, content=jpeg, params={"camera": "PINHOLE 800 600 525 525 400 300"}, headers=AUTH),
            422, "does not fit the image", "640x480")
    # Maps are names, never paths.
    refused(client.post("/v1/maps/nowhere/localize", content=jpeg, headers=AUTH), 404, "unknown map", "kitchen")
    refused(client.post("/v1/maps/..%2F..%2Fkitchen/localize", content=jpeg, headers=AUTH), 404, "no such endpoint")
    for raw_path, words in (("/v1/maps/../localize", ("unknown map '..'",)),
                            ("/v1/maps/../../etc/localize", ("no such endpoint", "../../etc"))):
        refused(raw_post(server.url, raw_path, jpeg), 404, *words)  # sent as written (httpx normalizes '..')
    # A name is a label, echoed, never a file.
    a = localize(client, "kitchen", image, camera=KITCHEN_CAMERA, name="../../etc/passwd").json()
    assert a["success"] and a["name"] == "../../etc/passwd"
    # Still answering, every worker alive.
    assert client.get("/healthz").json()["workers"] == 2
    metrics = client.get("/metrics").text
    assert 'pramloc_http_requests_total{route="/v1/maps/{name}/localize",status="422"}' in metrics


def test_killed_worker_fails_only_its_request_and_is_replaced(client, server, kitchen_root, tmp_path):
    """SIGKILL one of the two workers while both localize: at most the images it held (the
    one it localizes, the next one in its pipe) get 503 (retry succeeds), the other
    worker's clients go on, a new worker comes up."""
    names = KITCHEN_QUERIES * 2
    expected = {n: localize(client, "kitchen", kitchen_root / n, camera=KITCHEN_CAMERA, name=n).json()
                for n in KITCHEN_QUERIES}
    old = server.worker_pids()
    assert len(old) == 2

    def send(n):
        return n, localize(client, "kitchen", kitchen_root / n, camera=KITCHEN_CAMERA, name=n)

    with ThreadPoolExecutor(4) as ex:
        futures = [ex.submit(send, n) for n in names]
        deadline = time.monotonic() + 30
        while client.get("/healthz").json()["busy"] < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(old[0], signal.SIGKILL)
        answers = [f.result(timeout=120) for f in futures]
    failed = [(n, r) for n, r in answers if r.status_code != 200]
    assert len(failed) <= 2, [(n, r.status_code, r.text) for n, r in failed]
    for n, r in failed:
        assert r.status_code == 503 and "retry" in r.json()["error"] and r.headers["retry-after"] == "1"
        answers.append((n, localize(client, "kitchen", kitchen_root / n, camera=KITCHEN_CAMERA, name=n)))
    for n, r in answers:
        if r.status_code == 200:
            assert (r.json()["qvec"], r.json()["tvec"]) == (expected[n]["qvec"], expected[n]["tvec"])
    deadline = time.monotonic() + 60
    while client.get("/healthz").json()["workers"] < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    new = server.worker_pids()
    assert len(new) == 2 and old[0] not in new and old[1] in new
    assert "pramloc_worker_restarts_total 1.0" in client.get("/metrics").text


def test_sigterm_finishes_the_requests_in_flight(kitchen_map, kitchen_root):
    s = start_server([kitchen_map], "--workers", "1")
    try:
        with httpx.Client(base_url=s.url, timeout=120) as c, ThreadPoolExecutor(3) as ex:
            def send(n):
                return c.post("/v1/maps/kitchen/localize", content=(kitchen_root / n).read_bytes(),
                              params={"camera": KITCHEN_CAMERA, "name": n})

            futures = [ex.submit(send, n) for n in KITCHEN_QUERIES[:3]]
            deadline = time.monotonic() + 30
            while c.get("/healthz").json()["busy"] < 1 and time.monotonic() < deadline:
                time.sleep(0.005)
            s.proc.send_signal(signal.SIGTERM)
            answers = [f.result(timeout=120) for f in futures]
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert all(r.json()["success"] for r in answers)
        assert s.proc.wait(60) == 0
        assert any("stopped by SIGTERM" in line for line in s.lines), s.lines
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.url + "/healthz")
        assert not [p for p in psutil.process_iter(["cmdline"]) if s.url in " ".join(p.info["cmdline"] or [])]
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


def test_command_errors_are_one_line(kitchen_map, tmp_path):
    def run(*args):
        res = CliRunner().invoke(cli, ["serve", *map(str, args)])
        assert res.exit_code == 2, res.output
        line = res.output.strip()
        assert "\n" not in line and line.startswith("pramloc: error:"), line
        return line

    assert str(tmp_path / "missing") in run(tmp_path / "missing")
    twin = tmp_path / "other" / "kitchen"
    twin.parent.mkdir()
    shutil.copytree(kitchen_map, twin)
    assert "two maps named 'kitchen'" in run(kitchen_map, twin)
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert f"cannot listen on 127.0.0.1:{port}" in run(kitchen_map, "--port", port)
    assert "bad size" in run(kitchen_map, "--max-upload", "lots")
    # A worker that cannot load a map: the server does not start, and says why in one line.
    assert "map has no recognizer" in run(kitchen_map, "--mode", "recognition", "--workers", "1", "--port", "0")
