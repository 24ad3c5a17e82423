"""``pramloc serve``: the localizer as an HTTP service (FastAPI on uvicorn), with a page to try it.

Processes:

- **the server** (this process; uvicorn, one asyncio loop): HTTP, the bearer token, the
  upload and pixel limits, the image header checks, Prometheus metrics, the page and the
  maps' 3D figures. It never localizes.
- **N workers** (``workers``, 'spawn' processes, ``cores // N`` compute threads each, as
  ``localize --workers``): each loads every served map once (:class:`Localizer`: memory-mapped)
  and localizes one image at a time, by the code path of ``pramloc localize IMAGE``: the
  upload is written to a private temporary file and given to :meth:`Localizer.localize`
  with the client's camera (``--camera`` string) or none (EXIF, else a guess), so a pose
  is the CLI's, to the last bit. Images wait in one queue that the idle workers take from;
  a worker holds at most two (the one it localizes and, while every worker is busy, the
  next one in its pipe, so that it never waits for the round trip).

A worker that dies (killed, out of memory) fails only the images it held (503, "retry"),
and a new worker replaces it while the others go on answering. SIGTERM or Ctrl-C: the
server stops accepting connections, finishes the requests in flight (queued ones
included), then stops the workers (they ignore SIGINT/SIGTERM themselves and die with the
server, ``PR_SET_PDEATHSIG``).

Endpoints (JSON; errors are ``{"error": "one line", "status": code}``):

- ``POST /v1/maps/{name}/localize``: one image, as a multipart file or as the raw body;
  ``camera`` (query parameter or form field, ``"MODEL W H params..."`` at the image's size),
  ``name`` (a label echoed back, default the file name). HTTP 200 with ``"success": false``
  and a ``reason`` when the photo cannot be localized.
- ``POST /v1/maps/{name}/localize/batch``: several multipart files, one answer each, in order.
- ``GET /v1/maps``, ``GET /v1/maps/{name}/figure`` (the viewer's plotly figure of the map),
  ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``/docs`` (OpenAPI, served locally),
  ``/`` (the page).

With a token, every ``/v1`` request needs ``Authorization: Bearer TOKEN`` (401). Uploads
above ``Limits.max_upload_bytes`` get 413, images above ``Limits.max_pixels`` pixels
(decompression bombs), truncated or not images 422, unknown maps 404. Clients name maps
by their served name only, never a server file.

Poses are world-to-camera (COLMAP's ``cam_from_world``): ``x_cam = R(qvec) x_world + tvec``,
``qvec = (qw, qx, qy, qz)``, ``tvec`` and the camera ``center = -R^T tvec`` in map units
(metres for 7-Scenes and Strecha). Times are in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, logger
from .errors import PramlocError

try:  # the serve extra; FastAPI reads the endpoints' annotations, so these live at module level
    from fastapi import Request
    from fastapi.security import HTTPAuthorizationCredentials
except ImportError as _err:  # pragma: no cover - depends on the installation
    raise PramlocError(f"pramloc serve needs the 'serve' extra ({_err.name} is missing): "
                       "pip install 'pramloc[serve]'") from None

if TYPE_CHECKING:
    from .config import LocalizationConfig

PAGE = Path(__file__).with_name("serve_page.html")
IMAGE_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class Limits:
    """What one request may ask. ``max_upload_bytes``: request body (413 above);
    ``max_pixels``: declared image size (422 above: a decompression bomb is refused before
    any decoding); ``max_batch``: images of one batch request; ``request_timeout_s``: the
    longest an image waits for a worker and is localized (503 after); ``graceful_s``: how
    long SIGTERM waits for the requests in flight."""

    max_upload_bytes: int = 25 * 1000 * 1000
    max_pixels: int = 50_000_000
    max_batch: int = 32
    request_timeout_s: float = 300.0
    graceful_s: float = 120.0
    startup_timeout_s: float = 300.0


class WorkerDied(Exception):
    """The worker localizing an image died (the request gets 503: retry)."""


# ---------------------------------------------------------------- images


def _http_error(status: int, message: str, headers: dict | None = None):
    from starlette.exceptions import HTTPException

    return HTTPException(status, " ".join(str(message).split()), headers)


def inspect_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(PIL format, width, height) from the header of an uploaded image, without decoding
    it; 422 (a one-line reason) for an empty body, something that is not an image of
    :data:`IMAGE_FORMATS`, or more than ``max_pixels`` declared pixels."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise _http_error(422, "empty upload: send one JPEG or PNG image (the raw body, or a multipart file)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt, (w, h) = im.format, im.size
    except Image.DecompressionBombError as err:  # far above PIL's own limit: no size given back
        declared = re.search(r"\((\d+) pixels\)", str(err))
        what = f"{int(declared.group(1)):,} pixels" if declared else "too many pixels"
        raise _http_error(422, f"image declares {what}, above the limit of {max_pixels:,} (a decompression "
                               "bomb?); send a smaller image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        head = data[:16]
        kind = "text" if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "data"
        raise _http_error(422, f"not an image ({len(data):,} bytes of {kind}); send a JPEG or PNG") from None
    if fmt not in IMAGE_FORMATS:
        raise _http_error(422, f"unsupported image format {fmt}; send a JPEG or PNG")
    if w * h > max_pixels:
        raise _http_error(422, f"image of {w}x{h} pixels exceeds the limit of {max_pixels:,} pixels "
                               "(a decompression bomb?); send a smaller image")
    return fmt, w, h


def verify_image(data: bytes) -> None:
    """Decode the whole image (a JPEG at 1/8 of its size, libjpeg's DCT scaling: every
    byte of it is still read): a truncated or corrupt file raises :class:`PramlocError`."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format in ("JPEG", "MPO"):
                im.draft("L", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise PramlocError(f"cannot decode the image ({err}): truncated or corrupt") from None


# ---------------------------------------------------------------- worker process


def answer(r, map_name: str, camera: str | None) -> dict:
    """The JSON answer to one localized image (:class:`~pramloc.localize.QueryResult` ``r``):
    the log record of ``pramloc localize`` with the pose as ``qvec``/``tvec`` (world-to-camera,
    full float precision), the camera ``center`` (``-R^T t``), ``success``, the intrinsics
    used and where they came from, and ``times_ms`` per stage."""
    rec = r.log_record()
    for key in ("pose", "map", "times", "intrinsics", "camera", "focal", "focal_initial"):
        rec.pop(key, None)
    pose = r.pose
    return {"success": pose is not None, "map": map_name, **rec,
            "qvec": None if pose is None else pose.qvec.tolist(),
            "tvec": None if pose is None else pose.tvec.tolist(),
            "center": None if pose is None else pose.center.tolist(),
            "intrinsics": {"source": r.intrinsics, "camera": camera, "focal": r.focal,
                           "focal_initial": r.focal_initial},
            "times_ms": {k: round(v, 3) for k, v in r.times_ms.items()},
            "time_total_ms": round(sum(r.times_ms.values()), 3)}


def _worker_main(conn, maps: dict[str, str], mode: str, conf, device: str | None, threads: int,
                 parent: int, tmpdir: str) -> None:
    """A worker: load every map, answer "ready", then localize the jobs ``conn`` sends
    until ``None`` (or the server is gone)."""
    from . import runtime
    from .parallel import die_with_parent, set_threads

    runtime.configure()
    die_with_parent(parent, signal.SIGKILL)  # it ignores SIGTERM (the server stops it)

    set_threads(threads)
    try:
        from .localize import Localizer

        localizers = {name: Localizer(Path(path), mode, conf, device) for name, path in maps.items()}
    except Exception as err:  # noqa: BLE001 - reported to the server, which stops with it
        conn.send(("error", f"{type(err).__name__}: {err}" if not isinstance(err, PramlocError) else str(err)))
        return
    # Ctrl-C reaches the whole process group, `timeout` and systemd signal the whole group:
    # the server finishes the requests in flight first, then stops its workers itself. Set
    # after the imports: pycolmap's glog installs a SIGTERM handler of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        conn.send(_run_job(localizers, job, tmpdir))


def _run_job(localizers: dict, job: tuple, tmpdir: str) -> tuple[str, Any]:
    """("ok", answer) | ("bad_input", message) | ("error", message) for one image."""
    map_name, data, suffix, camera, name = job
    path = None
    try:
        verify_image(data)
        from .geometry import Camera
        from .intrinsics import check_camera

        fd, tmp = tempfile.mkstemp(suffix=suffix, dir=tmpdir)
        path = Path(tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        cam = Camera.from_string(camera) if camera else None
        if cam is not None:  # as `pramloc localize IMAGE --camera`: the camera must fit the image
            check_camera(path, cam)
        r = localizers[map_name].localize(path, cam, name)
        # A failure names the image by its label, never by the server's temporary file.
        r.reason = r.reason.replace(str(path), name)
        r.notes = {k: v.replace(str(path), name) for k, v in r.notes.items()}
        return "ok", answer(r, map_name, camera)
    except PramlocError as err:
        return "bad_input", str(err).replace(str(path), name) if path else str(err)
    except Exception as err:  # noqa: BLE001 - the worker survives; the request gets 500
        logger.exception("%s: localization raised", name)
        return "error", f"{type(err).__name__}: {err}"
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- worker pool


@dataclass
class _Job:
    payload: tuple
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued: float = field(default_factory=time.perf_counter)


def _resolve(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        (fut.set_exception if isinstance(value, BaseException) else fut.set_result)(value)


class _Worker:
    """One worker process and the thread that feeds it and replaces it when it dies.

    The thread sends the worker one image at a time, and a second one (waiting in the
    worker's pipe, so that it never idles between images) only while every other worker is
    busy too: an idle worker always gets the next image first. The images it holds when it
    dies (at most two) get 503."""

    DEPTH = 2  # images a worker holds at most: the one it localizes and the next

    def __init__(self, pool: WorkerPool, index: int):
        self.pool, self.index = pool, index
        self.proc = self.conn = None
        self.pid: int | None = None
        self.held: deque[_Job] = deque()
        self.started = threading.Event()
        self.start_error: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"pramloc-serve-worker-{index}", daemon=True)

    @property
    def busy(self) -> bool:
        return bool(self.held)

    def spawn(self) -> None:
        """Start the process; return once it has loaded the maps (PramlocError if it could not)."""
        p = self.pool
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        from .parallel import _thread_env

        with p.env_lock, _thread_env(p.threads):  # compute threads set before torch loads there
            proc = ctx.Process(target=_worker_main, name=f"pramloc-serve-worker-{self.index}",
                               args=(child, p.maps, p.mode, p.conf, p.device, p.threads, os.getpid(), p.tmpdir))
            proc.start()
        child.close()
        try:
            if not parent.poll(p.limits.startup_timeout_s):
                raise PramlocError(f"a worker did not load the maps within {p.limits.startup_timeout_s:g} s")
            kind, value = parent.recv()
        except (EOFError, OSError):
            proc.join(5)
            raise PramlocError(f"a worker died while loading the maps (exit code {proc.exitcode})") from None
        except PramlocError:
            proc.kill()
            proc.join()
            raise
        if kind != "ready":
            proc.join(5)
            raise PramlocError(f"a worker could not load the maps: {value}")
        self.proc, self.conn, self.pid = proc, parent, value

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def _run(self) -> None:
        try:
            self.spawn()
        except PramlocError as err:
            self.start_error = str(err)
        finally:
            self.started.set()
        if self.start_error:
            return
        p = self.pool
        while not p.closing.is_set():
            if not self.alive():
                self._fail_held()
                self._replace("died")
                continue
            if not self._take():
                continue
            mp.connection.wait([self.conn, self.proc.sentinel])
            try:
                result = self.conn.recv()  # EOFError when the worker died without answering
            except (EOFError, OSError):  # dying: its images fail and a new worker starts (above)
                self.proc.join(5)
                if self.proc.is_alive():
                    self.proc.kill()
                continue
            job = self.held.popleft()
            job.loop.call_soon_threadsafe(_resolve, job.future, result)

    def _take(self) -> bool:
        """Send the worker the next image(s) (see the class docstring); False when it holds none."""
        p = self.pool
        while len(self.held) < self.DEPTH:
            others_busy = all(w.busy for w in p.workers if w is not self and w.alive())
            if self.held and not others_busy:
                break
            try:
                job = p.jobs.get(timeout=0.5) if not self.held else p.jobs.get_nowait()
            except queue.Empty:
                break
            if job.future.done():  # timed out, or its client is gone
                continue
            p.metrics.queue_wait.observe(time.perf_counter() - job.queued)
            self.held.append(job)
            try:
                self.conn.send(job.payload)
            except OSError:  # died: its images fail in _run
                break
        return bool(self.held)

    def _fail_held(self) -> None:
        while self.held:
            job = self.held.popleft()
            err = WorkerDied(f"the worker localizing this image died (pid {self.pid}: killed, or out of memory?); "
                             "it is being replaced: retry")
            job.loop.call_soon_threadsafe(_resolve, job.future, err)

    def _replace(self, what: str) -> None:
        """Start a new worker in place of a dead one (retried until the pool closes)."""
        p = self.pool
        self.proc.join(5)
        logger.warning("worker %d (pid %s) %s (exit code %s); starting a new one", self.index, self.pid, what,
                       self.proc.exitcode)
        p.metrics.restarts.inc()
        with contextlib.suppress(OSError):
            self.conn.close()
        self.proc = self.conn = None
        delay = 1.0
        while not p.closing.is_set():
            try:
                self.spawn()
                logger.info("worker %d replaced (pid %s)", self.index, self.pid)
                return
            except PramlocError as err:
                logger.error("worker %d: %s; retrying in %.0f s", self.index, err, delay)
                p.closing.wait(delay)
                delay = min(2 * delay, 30.0)

    def stop(self, timeout: float) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


class WorkerPool:
    """``workers`` processes localizing the images of one shared queue (an idle worker takes
    the next); each holds one image at a time."""

    def __init__(self, maps: dict[str, Path], workers: int, mode: str, conf: LocalizationConfig | dict | None,
                 device: str | None, limits: Limits, metrics: Metrics):
        from .parallel import threads_per_worker

        self.maps = {k: str(v) for k, v in maps.items()}
        self.mode, self.conf, self.device, self.limits, self.metrics = mode, conf, device, limits, metrics
        self.threads = threads_per_worker(workers)
        self.jobs: queue.Queue[_Job] = queue.Queue()
        self.closing = threading.Event()
        self.env_lock = threading.Lock()
        self.tmpdir = ""
        self.started = False
        self.workers = [_Worker(self, i) for i in range(workers)]

    def start(self) -> None:
        """Start every worker (in parallel) and wait until each has loaded the maps."""
        shm = Path("/dev/shm")
        self.tmpdir = tempfile.mkdtemp(prefix="pramloc-serve-", dir=shm if os.access(shm, os.W_OK) else None)
        for w in self.workers:
            w.thread.start()
        for w in self.workers:
            w.started.wait()
        errors = [w.start_error for w in self.workers if w.start_error]
        if errors:
            self.close()
            raise PramlocError(errors[0])
        self.started = True

    async def run(self, payload: tuple) -> tuple[str, Any, float]:
        """Localize one image on the next free worker: (kind, value, seconds in the pool).
        Raises :class:`WorkerDied`, or 503 when no worker answered within the request timeout."""
        loop = asyncio.get_running_loop()
        job = _Job(payload, loop.create_future(), loop)
        self.jobs.put(job)
        try:
            kind, value = await asyncio.wait_for(job.future, self.limits.request_timeout_s)
        except TimeoutError:
            raise _http_error(503, f"no worker localized the image within {self.limits.request_timeout_s:g} s "
                                   "(server overloaded?); retry later", {"Retry-After": "5"}) from None
        return kind, value, time.perf_counter() - job.queued

    def status(self) -> dict:
        alive = [w for w in self.workers if w.alive()]
        return {"workers": len(alive), "workers_configured": len(self.workers),
                "busy": sum(w.busy for w in alive), "queued": self.jobs.qsize()}

    def close(self) -> None:
        self.closing.set()
        for w in self.workers:
            if w.thread.is_alive():
                w.thread.join(5)
            w.stop(10)
            w._fail_held()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


# ---------------------------------------------------------------- metrics, limits


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("pramloc_http_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("pramloc_http_request_seconds", "HTTP request latency by route", ["route"],
                                 buckets=STAGE_BUCKETS, registry=r)
        self.images = Counter("pramloc_localizations", "Images localized, by map and path taken "
                              "(recognition, retrieval; failed: no pose)", ["map", "path"], registry=r)
        self.rejected = Counter("pramloc_rejected_images", "Images refused (bad input, worker died, error)",
                                ["reason"], registry=r)
        self.stages = Histogram("pramloc_stage_seconds", "Localization time per stage (features, recognition, "
                                "matching, pnp, refinement, retrieval) and in total", ["stage"],
                                buckets=STAGE_BUCKETS, registry=r)
        self.queue_wait = Histogram("pramloc_queue_wait_seconds", "Time an image waited for a free worker",
                                    buckets=STAGE_BUCKETS, registry=r)
        self.restarts = Counter("pramloc_worker_restarts", "Workers replaced after they died", registry=r)
        self.workers = Gauge("pramloc_workers", "Worker processes alive", registry=r)
        self.busy = Gauge("pramloc_workers_busy", "Workers localizing an image now", registry=r)


class _MetricsMiddleware:
    """Counts every HTTP request by route template (not the raw path) and status."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status, t0 = 500, time.perf_counter()

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


class _BodyLimit:
    """413 for a request body above ``limit`` bytes: at once when Content-Length says so,
    else as soon as the streamed body passes it. Before any answer, what the application
    left of the body is read and dropped (up to ``drain`` bytes): a client still sending
    gets the answer (401, 404, 413, ...) instead of a reset connection."""

    def __init__(self, app, limit: int, drain: int = 256 << 20):
        self.app, self.limit, self.drain = app, limit, drain

    def _error(self):
        return _http_error(413, f"upload larger than the limit of {self.limit:,} bytes")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = {"seen": 0, "done": False}

        async def drain():
            dropped = 0
            while not state["done"] and dropped < self.drain:
                message = await receive()
                dropped += len(message.get("body", b""))
                state["done"] = message["type"] != "http.request" or not message.get("more_body")

        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            from starlette.responses import JSONResponse

            await drain()
            return await JSONResponse({"error": self._error().detail, "status": 413}, 413)(scope, receive, send)

        async def limited():
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                state["done"] = not message.get("more_body")
                if state["seen"] > self.limit:
                    await drain()
                    raise self._error()
            else:
                state["done"] = True
            return message

        async def send_after_body(message):
            if message["type"] == "http.response.start" and not state["done"]:
                await drain()
            await send(message)

        await self.app(scope, limited, send_after_body)


# ---------------------------------------------------------------- the service


def map_names(maps: Sequence[Path]) -> dict[str, Path]:
    """Served name (the folder's name) -> folder; two maps with one name are an error."""
    named: dict[str, Path] = {}
    for m in maps:
        path = Path(m).resolve()
        if path.name in named:
            raise PramlocError(f"two maps named {path.name!r} ({named[path.name]} and {path}); serve maps from "
                               "folders with different names")
        named[path.name] = path
    if not named:
        raise PramlocError("give at least one map folder to serve")
    return named


def map_info(name: str, manifest: dict) -> dict:
    """What ``GET /v1/maps`` says of one map: counts, features, recognizer, version built with."""
    c = manifest.get("counts", {})
    return {"name": name, "images": c.get("images"), "points": c.get("points"), "landmarks": c.get("landmarks"),
            "observations": c.get("observations"), "features": manifest.get("feature", {}).get("name"),
            "recognizer": bool(manifest.get("recognizer")), "format_version": manifest.get("format_version"),
            "pramloc_version": manifest.get("pramloc_version"), "created": manifest.get("created")}


class Service:
    """The served maps, the worker pool, the limits, the token and the metrics of one server."""

    def __init__(self, maps: Sequence[Path], workers: int = 1, token: str | None = None, mode: str = "auto",
                 conf: LocalizationConfig | dict | None = None, device: str | None = None, limits: Limits = Limits()):
        from .localize import MODES
        from .mapio import load_map

        if mode not in MODES:
            raise PramlocError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
        if workers < 1:
            raise PramlocError(f"--workers must be at least 1, got {workers}")
        if token is not None and not token.strip():
            raise PramlocError("--token is empty")
        self.paths = map_names(maps)
        # A missing or broken map is one error here, before any worker starts.
        self.info = {name: map_info(name, load_map(path, lazy=True).manifest) for name, path in self.paths.items()}
        self.token, self.limits, self.mode = token, limits, mode
        self.metrics = Metrics()
        self.pool = WorkerPool(self.paths, workers, mode, conf, device, limits, self.metrics)
        self._figures: dict[str, tuple[bytes, float]] = {}
        self._figure_lock = threading.Lock()
        self.started_at = time.time()

    # the map figures of the page (built once per map, on demand)

    def figure(self, name: str) -> tuple[bytes, float]:
        """The viewer's plotly figure of map ``name`` as JSON (points by landmark, map
        cameras) and the frustum size of its scene."""
        with self._figure_lock:
            if name not in self._figures:
                from plotly.io import to_json

                from . import viewer
                from .mapio import load_map

                m = load_map(self.paths[name], lazy=True)
                fig = viewer.figure(m, [], None)
                fig.update_layout(height=None, autosize=True)
                self._figures[name] = (to_json(fig, validate=False).encode(), viewer.scene_size(m))
            return self._figures[name]

    def query_traces(self, name: str, result: dict) -> list:
        """The viewer's traces of one localized image (its frustum and centre, hover: its record)."""
        import numpy as np
        import plotly.graph_objects as go
        from plotly.io import to_json

        from . import viewer
        from .geometry import Pose

        _, size = self.figure(name)
        pose = Pose(np.array(result["qvec"]), np.array(result["tvec"]))
        record = {**result, "times": result["times_ms"]}
        run = viewer.Run(result["name"], {result["name"]: pose}, {result["name"]: record})
        return json.loads(to_json(go.Figure(viewer.query_traces(run, "diamond", size, None)), validate=False))["data"]


def create_app(service: Service, on_ready: Callable[[], None] | None = None):
    """The FastAPI application of ``service`` (its lifespan starts and stops the workers)."""
    from fastapi import APIRouter, Depends, Query
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from fastapi.security import HTTPBearer
    from fastapi_offline import FastAPIOffline
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException

    limits, metrics, pool = service.limits, service.metrics, service.pool

    @contextlib.asynccontextmanager
    async def lifespan(app):
        import anyio

        if not pool.started:  # main() starts the workers before serving (errors as one line)
            await anyio.to_thread.run_sync(pool.start)
        metrics.workers.set_function(lambda: pool.status()["workers"])
        metrics.busy.set_function(lambda: pool.status()["busy"])
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(pool.close)

    app = FastAPIOffline(title="pramloc", version=__version__, lifespan=lifespan,
                         description="Visual localization: the 6-DoF pose (world-to-camera, COLMAP convention) "
                                     "of a photo in a map. Times in ms.")
    bearer = HTTPBearer(auto_error=False, description="Needed when the server was started with --token.")

    def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if service.token is None:
            return
        if credentials is None or credentials.scheme.lower() != "bearer" or not secrets.compare_digest(
                credentials.credentials.encode(), service.token.encode()):
            raise _http_error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN'",
                              {"WWW-Authenticate": "Bearer"})

    def served(name: str) -> str:
        if name not in service.paths:
            raise _http_error(404, f"unknown map {name!r}; maps: {', '.join(service.paths)}")
        return name

    def check_camera_string(camera: str | None) -> str | None:
        if camera is None or not camera.strip():
            return None
        from .geometry import Camera

        try:
            Camera.from_string(camera)
        except PramlocError as err:
            raise _http_error(422, f"bad camera {camera!r}: {err}") from None
        return camera.strip()

    async def uploads(request: Request, most: int) -> tuple[list[tuple[str | None, bytes]], dict]:
        """The images of a request ((file name, bytes) each: multipart files, else the raw
        body) and its other form fields."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=most, max_fields=16)
            files = [(v.filename, await v.read()) for _, v in form.multi_items() if isinstance(v, UploadFile)]
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            await form.close()
            if not files:
                raise _http_error(422, "no image in the form: send the image as a file field (e.g. -F image=@photo.jpg)")
            return files, fields
        return [(None, await request.body())], {}

    async def localize_one(name: str, data: bytes, camera: str | None, label: str) -> dict:
        """The answer for one image, or raise the HTTP error it deserves."""
        try:
            fmt, _, _ = inspect_image(data, limits.max_pixels)
        except HTTPException:
            metrics.rejected.labels("bad_image").inc()
            raise
        try:
            kind, value, seconds = await pool.run((name, data, IMAGE_FORMATS[fmt], camera, label))
        except WorkerDied as err:
            metrics.rejected.labels("worker_died").inc()
            raise _http_error(503, str(err), {"Retry-After": "1"}) from None
        if kind == "bad_input":
            metrics.rejected.labels("bad_image").inc()
            raise _http_error(422, value)
        if kind != "ok":
            metrics.rejected.labels("error").inc()
            raise _http_error(500, f"localization failed on the server: {value}")
        metrics.images.labels(name, value["path"]).inc()
        for stage, ms in value["times_ms"].items():
            metrics.stages.labels(stage).observe(ms / 1000)
        metrics.stages.labels("total").observe(value["time_total_ms"] / 1000)
        value["server_ms"] = {"wait_and_localize": round(seconds * 1000, 3)}
        return value

    api = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])
    image_body = {"requestBody": {"required": True, "content": {
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary"},
            "camera": {"type": "string", "description": "intrinsics at the image's size, e.g. "
                                                        "'PINHOLE 640 480 525 525 320 240'"}}}}}}}
    batch_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["images"], "properties": {
            "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "camera": {"type": "string", "description": "intrinsics of every image (at its size)"}}}}}}}
    camera_q = Query(None, description="Intrinsics 'MODEL W H params...' at the image's size (as localize "
                                       "--camera); default: from EXIF, else a guess, focal refined")

    @api.get("/maps", summary="The served maps")
    async def list_maps() -> dict:
        return {"maps": list(service.info.values())}

    @api.post("/maps/{name}/localize", summary="Localize one image", openapi_extra=image_body)
    async def localize(request: Request, name: str, camera: str | None = camera_q,
                       label: str | None = Query(None, alias="name", description="A label for the image, echoed "
                                                 "back (default: the file name)"),
                       figure: bool = Query(False, description="Add the viewer's traces of the query camera")):
        served(name)
        files, fields = await uploads(request, 1)
        if len(files) != 1:
            raise _http_error(422, f"{len(files)} images sent: this endpoint takes one (see /localize/batch)")
        filename, data = files[0]
        cam = check_camera_string(fields.get("camera") or camera)
        label = fields.get("name") or label or filename or "image"
        result = await localize_one(name, data, cam, label)
        if figure and result["success"]:
            import anyio

            result["figure"] = await anyio.to_thread.run_sync(service.query_traces, name, result)
        return JSONResponse(result)

    @api.post("/maps/{name}/localize/batch", summary="Localize several images", openapi_extra=batch_body)
    async def localize_batch(request: Request, name: str, camera: str | None = camera_q):
        served(name)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise _http_error(422, "send the images as multipart files (-F images=@a.jpg -F images=@b.jpg)")
        files, fields = await uploads(request, limits.max_batch)
        cam = check_camera_string(fields.get("camera") or camera)

        async def one(i: int, filename: str | None, data: bytes) -> dict:
            label = filename or f"image{i}"
            try:
                return {"status": 200, **await localize_one(name, data, cam, label)}
            except HTTPException as err:
                return {"name": label, "success": False, "status": err.status_code, "error": err.detail}

        results = await asyncio.gather(*(one(i, f, d) for i, (f, d) in enumerate(files)))
        return JSONResponse({"map": name, "results": list(results)})

    @api.get("/maps/{name}/figure", summary="The map's 3D figure (plotly JSON) for the page")
    async def map_figure(name: str):
        import anyio

        data, _ = await anyio.to_thread.run_sync(service.figure, served(name))
        return Response(data, media_type="application/json")

    app.include_router(api)

    @app.get("/healthz", summary="Liveness: workers alive, busy, images queued")
    async def healthz():
        s = pool.status()
        ok = s["workers"] > 0
        return JSONResponse({"status": "ok" if ok else "no worker", **s, "maps": list(service.paths),
                             "version": __version__}, 200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # Only what this server serves: no script from elsewhere can run on the page.
    csp = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
           "img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'")

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Content-Security-Policy": csp})

    plotly_js: list[bytes] = []

    @app.get("/static/plotly.min.js", include_in_schema=False)
    async def plotly_script():
        if not plotly_js:
            from plotly.offline import get_plotlyjs

            plotly_js.append(get_plotlyjs().encode())
        return Response(plotly_js[0], media_type="application/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        import fastapi_offline

        return Response((Path(fastapi_offline.__file__).parent / "static" / "favicon.png").read_bytes(),
                        media_type="image/png")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        message = err.detail
        if err.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif err.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        return JSONResponse({"error": " ".join(str(message).split()), "status": err.status_code}, err.status_code,
                            headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        text = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in err.errors())
        return JSONResponse({"error": f"bad request: {text}", "status": 422}, 422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):
        logger.error("%s %s: %s: %s", request.method, request.url.path, type(err).__name__, err)
        return JSONResponse({"error": f"internal error ({type(err).__name__})", "status": 500}, 500)

    app.add_middleware(_BodyLimit, limit=limits.max_upload_bytes)
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    return app


# ---------------------------------------------------------------- main


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port); a one-line error if it cannot."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise PramlocError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise PramlocError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def main(maps: Sequence[Path], host: str = "127.0.0.1", port: int = 8000, workers: int | None = None,
         token: str | None = None, mode: str = "auto", conf: LocalizationConfig | dict | None = None,
         device: str | None = None, limits: Limits = Limits(),
         on_ready: Callable[[str, Service], None] | None = None) -> dict:
    """Serve ``maps`` (folders; each under its folder's name) on ``host``:``port`` (0: a free
    port) with ``workers`` processes (default: one per core) until SIGTERM or SIGINT, which
    finish the requests in flight. ``on_ready(url, service)`` is called once the workers
    have loaded the maps. Returns what the server did: url, maps, workers, requests by
    status, workers replaced, and the signal that stopped it."""
    from .parallel import num_cores

    import uvicorn

    service = Service(maps, workers or num_cores(), token, mode, conf, device, limits)
    sock = listen(host, port)
    url = url_of(sock)
    try:
        service.pool.start()  # every worker has loaded the maps (or one line says why not)
    except BaseException:
        sock.close()
        raise
    app = create_app(service, on_ready=(lambda: on_ready(url, service)) if on_ready else None)
    debug = logger.isEnabledFor(10)
    config = uvicorn.Config(app, log_level="info" if debug else "warning", access_log=debug, lifespan="on",
                            timeout_graceful_shutdown=limits.graceful_s, server_header=False)
    server = uvicorn.Server(config)
    stopped_by: list[str] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    # uvicorn raises the signal that stopped it again once it has shut down gracefully:
    # recorded here, and the command then ends normally.
    for sig in previous:
        signal.signal(sig, lambda number, frame: stopped_by.append(signal.Signals(number).name))
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        service.pool.close()
    if not server.started:
        raise PramlocError("the server did not start (see the errors above)")
    counts: dict[str, int] = {}
    for metric in service.metrics.requests.collect():
        for s in metric.samples:
            if s.name.endswith("_total"):
                counts[s.labels["status"]] = counts.get(s.labels["status"], 0) + int(s.value)
    restarts = sum(s.value for m in service.metrics.restarts.collect() for s in m.samples if s.name.endswith("_total"))
    return {"url": url, "maps": list(service.paths), "workers": len(service.pool.workers),
            "requests": dict(sorted(counts.items())), "workers_replaced": int(restarts),
            "stopped_by": stopped_by[0] if stopped_by else ""}


def parse_size(text: str) -> int:
    """Bytes of ``"25MB"``, ``"500kB"``, ``"1GiB"`` or a plain number."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*", text.lower())
    if not m:
        raise PramlocError(f"bad size {text!r} (e.g. 25MB, 500kB, 1GiB)")
    unit = (m.group(2) or "b").rstrip("b") or "b"
    scale = {"b": 1, "k": 1000, "m": 1000 ** 2, "g": 1000 ** 3, "ki": 1024, "mi": 1024 ** 2, "gi": 1024 ** 3}[unit]
    return int(float(m.group(1)) * scale)
