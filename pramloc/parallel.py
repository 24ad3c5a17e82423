"""Execution backends for embarrassingly parallel work: serial, local processes, Ray.

One interface, :func:`map_ordered`: every worker builds its state once (``make()``, e.g. a
:class:`~pramloc.localize.Localizer` loading the map), then ``call(state, item)`` runs per
item; results come back **in the order of the items**, streamed as they are ready.

- ``serial``: in this process (``workers=1``).
- ``processes``: ``workers`` processes of the 'spawn' context (torch and fork do not mix),
  each with ``cores // workers`` threads (torch, OpenMP, OpenBLAS, OpenCV) so that workers
  do not oversubscribe the cores.
- ``ray``: a pool of Ray actors (``ray.init(address)``; a local cluster when no address is
  given). An actor that dies is restarted by Ray and its unfinished items are retried, so
  every item has exactly one result. Ray is optional: ``pip install 'pramloc[ray]'``.

``make`` and ``call`` must be picklable (module-level functions or ``functools.partial``).
"""

from __future__ import annotations

import os
from collections import deque
from contextlib import contextmanager
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, TypeVar

from .errors import PramlocError

T = TypeVar("T")
R = TypeVar("R")

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
IN_FLIGHT = 2  # items submitted ahead per worker (processes and Ray actors)
RAY_NAMESPACE = "pramloc"


def ray_actor_name(i: int) -> str:
    """Name of this process's Ray actor ``i`` (named so that a test or a user can find it;
    the process id keeps two runs on one cluster apart)."""
    return f"pramloc-worker-{os.getpid()}-{i}"


def num_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Threads each of ``workers`` workers may use without oversubscribing the cores."""
    return max(1, num_cores() // max(1, workers))


def set_threads(n: int) -> None:
    """Limit this process's compute threads to ``n`` (torch, OpenCV; OpenMP/BLAS through the
    environment for libraries loaded later)."""
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass


@contextmanager
def _thread_env(n: int):
    """Thread variables set to ``n`` while child processes are started (they inherit them
    before importing numpy or torch)."""
    old = {v: os.environ.get(v) for v in THREAD_VARS}
    os.environ.update({v: str(n) for v in THREAD_VARS})
    try:
        yield
    finally:
        for v, val in old.items():
            if val is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = val


# ---------------------------------------------------------------- processes

_STATE: dict[str, Any] = {}


def die_with_parent(parent: int, sig: int | None = None) -> None:
    """Ask Linux to send this worker ``sig`` (default SIGTERM) when the process that started it
    dies (a killed ``pramloc`` command must not leave its workers waiting forever)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM if sig is None else sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        return
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)


def _init_worker(make: Callable[[], Any], call: Callable, threads: int, parent: int) -> None:
    from . import runtime

    runtime.configure()
    die_with_parent(parent)
    set_threads(threads)
    _STATE["call"] = call
    try:
        _STATE["state"] = make()
    except Exception as err:  # raised with the first item: a failing initializer would respawn forever
        _STATE["error"] = err


def _run_item(item):
    if "error" in _STATE:
        raise _STATE["error"]
    return _STATE["call"](_STATE["state"], item)


def _processes(make, call, items: Iterable, workers: int) -> Iterator:
    """A process pool (concurrent.futures: a worker that dies, e.g. out of memory, breaks the
    pool with an error instead of leaving it waiting forever)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    threads = threads_per_worker(workers)
    with _thread_env(threads):
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=(make, call, threads, os.getpid()))
    try:
        # At most ``IN_FLIGHT`` items per worker submitted at a time: ``items`` may be a lazy
        # iterator (e.g. image bytes read as they are sent), never held whole.
        source = iter(items)
        window = deque(pool.submit(_run_item, item) for item in islice(source, IN_FLIGHT * workers))
        while window:
            result = window.popleft().result()
            for item in islice(source, 1):
                window.append(pool.submit(_run_item, item))
            yield result
    except BrokenProcessPool:
        raise PramlocError(f"a worker process died (killed, or out of memory?); rerun, with fewer --workers "
                           f"if memory is short") from None
    finally:
        # Done, failed, or the caller stopped early: stop the workers now.
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- ray

_RAY_HINT = "--ray needs Ray: pip install 'pramloc[ray]' (or pip install 'ray>=2.9')"


def _ray():
    try:
        import ray
    except ImportError:
        raise PramlocError(_RAY_HINT) from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A ``[ray://]host:port`` address that nothing answers at is one error now (Ray itself
    keeps retrying for minutes); other forms (``auto``) are left to Ray."""
    import socket

    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise PramlocError(f"cannot reach the Ray cluster at {address} ({err.strerror or err}); is `ray start "
                           "--head` running there?") from None


def ray_init(address: str | None = None, num_cpus: int | None = None):
    """Connect to the Ray cluster at ``address``, or start a local one (``num_cpus`` slots,
    default the cores; no dashboard) when none is given. Does nothing when Ray is already
    initialized."""
    ray = _ray()
    if not ray.is_initialized():
        if address:
            _check_reachable(address)
        kwargs = {"address": address} if address else {"num_cpus": num_cpus or num_cores(),
                                                         "include_dashboard": False}
        try:
            ray.init(namespace=RAY_NAMESPACE, log_to_driver=False, configure_logging=False, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
            raise PramlocError(f"cannot start or reach {where} ({str(err).splitlines()[0][:160]})") from None
    return ray


class _Actor:
    """A Ray actor holding one worker's state (built once)."""

    def __init__(self, make: Callable[[], Any], call: Callable, threads: int):
        from . import runtime

        runtime.configure()
        set_threads(threads)
        self.state, self.call = make(), call

    def run(self, item):
        return self.call(self.state, item)

    def ready(self) -> bool:
        return True


def _ray_map(make, call, items: Iterable, workers: int, address: str | None) -> Iterator:
    """Items to a pool of ``workers`` actors, at most ``IN_FLIGHT`` in flight each and at most
    ``2 * IN_FLIGHT * workers`` sent or waiting to be yielded; results yielded in item
    order, ``items`` read as they are sent (a lazy iterator is never held whole). Ray restarts a dead actor (``max_restarts``) and re-runs its items
    (``max_task_retries``); an item whose actor died anyway is submitted again to another
    actor, so each item yields exactly one result."""
    ray = ray_init(address, num_cpus=max(num_cores(), workers))  # one slot per actor on a local cluster
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= workers else 0
    threads = threads_per_worker(workers) if not address else 1
    cls = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=-1, max_task_retries=-1)(_Actor)
    actors = [cls.options(name=ray_actor_name(i)).remote(make, call, threads)
              for i in range(workers)]
    try:
        ray.get([a.ready.remote() for a in actors])
        source = enumerate(items)
        pending: dict[int, tuple[Any, int, Any]] = {}  # item index -> (object ref, actor index, item)
        retry: deque = deque()                          # (index, item) whose actor died for good
        load = [0] * workers
        done: dict[int, Any] = {}
        nxt = 0
        dead = 10 ** 9  # the load of an actor that died for good: never chosen again

        def submit():
            while min(load) < IN_FLIGHT:
                # Results wait in ``done`` for the slowest item: new items only while fewer than
                # 2 * IN_FLIGHT per worker are out or waiting (a slow first item does not let
                # the other actors read the whole input ahead).
                if not retry and len(pending) + len(done) >= 2 * IN_FLIGHT * workers:
                    return
                job = retry.popleft() if retry else next(source, None)
                if job is None:
                    return
                a = load.index(min(load))
                pending[job[0]] = (actors[a].run.remote(job[1]), a, job[1])
                load[a] += 1
            if retry and min(load) >= dead:
                raise PramlocError(f"every Ray worker died for good; {len(retry)} queries not run")

        submit()
        while pending:
            refs = {ref: i for i, (ref, _, _) in pending.items()}
            ready, _ = ray.wait(list(refs), num_returns=1)
            i = refs[ready[0]]
            _, a, item = pending.pop(i)
            load[a] -= 1
            try:
                done[i] = ray.get(ready[0])
            except ray.exceptions.RayActorError:
                retry.appendleft((i, item))  # its actor died for good: run it again elsewhere
                load[a] = dead
            submit()
            while nxt in done:
                yield done.pop(nxt)
                nxt += 1
            submit()  # the window has room again
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)


# ---------------------------------------------------------------- interface

_RAY_DEFAULT: dict[str, Any] = {}


@contextmanager
def ray_backend(address: str | None = None):
    """Within this block, :func:`map_ordered` calls that do not say otherwise run on Ray
    (``address``: an existing cluster, else a local one): how ``build-map --ray`` reaches
    the stages it calls without threading the option through each of them."""
    _RAY_DEFAULT["address"] = address
    try:
        yield
    finally:
        _RAY_DEFAULT.clear()


def map_ordered(make: Callable[[], Any], call: Callable[[Any, T], R], items: Iterable[T], workers: int = 1,
                ray: bool | None = None, ray_address: str | None = None, min_items_per_worker: int = 1
                ) -> Iterator[R]:
    """``call(state, item)`` for every item, ``state = make()`` built once per worker;
    results yielded in the order of ``items``. ``workers=1`` without ``ray`` runs in this
    process; more run in processes, or with ``ray`` in Ray actors (``ray_address``: an
    existing cluster, else a local one). ``ray=None``: Ray inside :func:`ray_backend`.
    ``items`` may be a lazy iterator: it is read as items are sent, a few per worker ahead.

    ``min_items_per_worker``: local processes only for a list of at least that many items
    per worker (fewer processes, or this process, otherwise). Starting a worker costs
    seconds (a spawned interpreter importing torch, then ``make()``): on 2 cores, extracting
    SIFT features of 6 Strecha photos took 3.2 s on 2 processes and 1.3 s in this one,
    matching 31 of their pairs 4.4 s against 2.2 s."""
    if ray is None and _RAY_DEFAULT:
        ray, ray_address = True, ray_address or _RAY_DEFAULT["address"]
    if ray:
        return _ray_map(make, call, items, max(1, workers), ray_address)
    if hasattr(items, "__len__"):
        workers = min(workers, len(items) // max(1, min_items_per_worker))  # no idle or barely used workers
    workers = max(1, workers)
    if workers == 1:
        return _serial(make, call, items)
    return _processes(make, call, items, workers)


def _serial(make, call, items: Iterable) -> Iterator:
    state = None
    for k, item in enumerate(items):
        if k == 0:
            state = make()  # not for an empty list
        yield call(state, item)
