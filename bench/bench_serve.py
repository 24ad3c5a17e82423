"""Load, fault and bad-input benchmark of ``pramloc serve`` (issue 23), against ``pramloc localize``.

On the 7-Scenes interleaved map (167 queries, camera "PINHOLE 640 480 525 525 320 240"):

1. **reference**: ``pramloc localize MAP --dataset 7scenes ... --workers W``: the CLI's results file.
   Then the server starts (``pramloc serve MAP --workers W --token T``) and answers 8 warm-up requests.
2. **CLI throughput** (each of ``--rounds`` rounds: 2 then 3, so that both see the same machine):
   ``pramloc localize MAP --images LINKS --queries LIST --workers W`` over the
   same 1,000-query sequence the server gets (the 167 queries in split order, over and over:
   symlinks ``rK/rgb/...`` under ``bench/out/serve/repeat`` make the names distinct), and over
   its first 20 queries: steady-state queries/s = 980 / (wall(1000) - wall(20)) (process
   start, map loading and worker start-up cancel out); end to end = 1000 / wall(1000).
3. **load**: 8 concurrent clients (httpx, asyncio, one connection each) send 1,000 requests
   (raw JPEG bodies, ``camera`` and ``name`` query parameters); every answer is compared with the reference line
   (``pramloc.io.pose_line``: identical text); latency per request as the client sees it;
   the server's memory (RSS every 0.5 s, USS every 2 s, of the server and its workers, psutil)
   averaged over the first and the last 100 requests. CPU seconds that processes
   outside the benchmark used meanwhile are recorded (a shared machine). Then one client
   alone sends 100 requests: the latency without queueing.
4. **fault**: 300 more requests; after 100, one worker gets SIGKILL. Clients retry a 503
   (up to 3 times). Counted: 503s, other failures, answers identical, time until the
   replacement worker is up; the run has a deadline (nothing may hang).
5. **bad inputs**: a truncated JPEG, a PNG declaring 100k x 100k pixels, a text file, an
   empty body, a 30 MB upload (with and without Content-Length), a wrong token, map names
   with ``../``: status and JSON error of each, then a real query (must still succeed).
6. SIGTERM: the server's exit code and last line.

    python bench/bench_serve.py                       # map bench/out/serve/kitchen, W = cores
    python bench/bench_serve.py --workers 2 --requests 1000

Build the map first (about 3 minutes):
    python cli.py build-map --dataset 7scenes --root ../shared/data/7scenes_redkitchen \\
        --split ../shared/data/7scenes_redkitchen/splits/interleaved_db.txt --out bench/out/serve/kitchen
Writes bench/results/serve.json and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import KITCHEN, OUT, RESULTS, ROOT, stamp  # noqa: E402

CAMERA = "PINHOLE 640 480 525 525 320 240"
SPLIT = KITCHEN / "splits" / "interleaved_query.txt"
TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLI = [sys.executable, "-m", "pramloc.cli", "-q"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "GLOG_minloglevel": "2"}


def pct(values, q) -> float:
    return round(float(np.percentile(values, q)), 1) if len(values) else float("nan")


# ---------------------------------------------------------------- the CLI


def run_cli(args: list[str], usage: dict | None = None) -> float:
    """Wall seconds of one ``pramloc`` command; ``usage`` gets its CPU user/sys seconds and
    page faults (its workers included: the command waits for them)."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(CLI + args, check=True, env=ENV, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if usage is not None:
        usage.update(user_s=round(r1.ru_utime - r0.ru_utime, 1), sys_s=round(r1.ru_stime - r0.ru_stime, 1),
                     minor_faults=r1.ru_minflt - r0.ru_minflt, major_faults=r1.ru_majflt - r0.ru_majflt)
    return wall


def process_usage(procs) -> dict:
    """CPU user/sys seconds and page faults so far of ``procs`` (psutil processes), summed."""
    out = {"user_s": 0.0, "sys_s": 0.0, "minor_faults": 0, "major_faults": 0}
    for p in procs:
        try:
            t = p.cpu_times()
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, Exception):  # noqa: BLE001 - a process gone meanwhile
            continue
        out["user_s"] += t.user
        out["sys_s"] += t.system
        out["minor_faults"] += int(fields[7])
        out["major_faults"] += int(fields[9])
    return out


def usage_delta(a: dict, b: dict) -> dict:
    return {k: round(b[k] - a[k], 1) if isinstance(b[k], float) else b[k] - a[k] for k in a}


def repeat_links(names: list[str], n: int, work: Path) -> tuple[Path, Path, Path]:
    """Symlinks rK/NAME -> the dataset image, the hloc query lists of the first ``n`` and
    of the first 20 of the sequence. No image is copied."""
    links = work / "repeat"
    lines = []
    for i in range(n):
        k, name = divmod(i, len(names))
        link = links / f"r{k}" / names[name]
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(KITCHEN / names[name])
        lines.append(f"r{k}/{names[name]} {CAMERA}\n")
    full, short = work / f"list{n}.txt", work / "list20.txt"
    full.write_text("".join(lines))
    short.write_text("".join(lines[:20]))
    return links, full, short


# ---------------------------------------------------------------- the server


class ServerProcess:
    def __init__(self, map_path: Path, workers: int):
        self.proc = subprocess.Popen(CLI[:-1] + ["serve", str(map_path), "--port", "0", "--workers", str(workers),
                                                 "--token", TOKEN], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=ENV)
        self.lines: list[str] = []
        ready: queue.Queue = queue.Queue()

        def read():
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if line.startswith("pramloc serve: http://"):
                    ready.put(line.split()[2])
            ready.put(None)

        threading.Thread(target=read, daemon=True).start()
        self.url = ready.get(timeout=300)
        if self.url is None:
            raise RuntimeError("server did not start:\n" + "\n".join(self.lines))

    def processes(self):
        import psutil

        me = psutil.Process(self.proc.pid)
        return [me] + [p for p in me.children() if "spawn_main" in " ".join(p.cmdline())]


class MemorySampler(threading.Thread):
    """RSS (every ``period`` s) and USS (every 4th sample: reading it costs ~2 ms a process)
    in MB of the server and its workers, with the number of requests answered then."""

    def __init__(self, server: ServerProcess, done, period: float = 0.5):
        super().__init__(daemon=True)
        self.server, self.done, self.period = server, done, period
        self.samples: list[tuple[int, float, float | None, int]] = []  # (answered, rss, uss, processes)
        self.stop = threading.Event()

    def run(self):
        import psutil

        procs, k = self.server.processes(), 0
        while not self.stop.wait(self.period):
            if not all(p.is_running() for p in procs):
                procs = self.server.processes()
            rss, uss = 0.0, 0.0 if k % 4 == 0 else None
            for p in procs:
                try:
                    if uss is None:
                        rss += p.memory_info().rss / 1e6
                    else:
                        m = p.memory_full_info()
                        rss, uss = rss + m.rss / 1e6, uss + m.uss / 1e6
                except psutil.Error:
                    continue
            self.samples.append((self.done(), rss, uss, len(procs)))
            k += 1

    def window(self, lo: int, hi: int) -> dict:
        s = [x for x in self.samples if lo <= x[0] < hi]
        u = [x[2] for x in s if x[2] is not None]
        return {"samples": len(s), "rss_mb": round(float(np.mean([x[1] for x in s])), 1) if s else None,
                "uss_mb": round(float(np.mean(u)), 1) if u else None}


async def load(url: str, sequence: list[tuple[str, bytes]], clients: int, reference: dict[str, str],
               on_done=None, retries: int = 0, deadline: float = 600) -> dict:
    """``clients`` concurrent clients send ``sequence`` (name, JPEG bytes) in order (each
    takes the next); per request: status of each try, latency, whether the pose is the
    reference's."""
    import httpx

    from pramloc.geometry import Pose
    from pramloc.io import pose_line

    records: list[dict | None] = [None] * len(sequence)
    nxt = iter(range(len(sequence)))
    done = [0]

    async def client():
        async with httpx.AsyncClient(base_url=url, timeout=120, headers=AUTH,
                                     limits=httpx.Limits(max_connections=1)) as c:
            for i in nxt:
                name, data = sequence[i]
                tries = []
                t0 = time.perf_counter()
                for _ in range(retries + 1):
                    try:
                        r = await c.post("/v1/maps/kitchen/localize", content=data,
                                         params={"camera": CAMERA, "name": name})
                        tries.append(r.status_code)
                    except httpx.HTTPError as err:
                        tries.append(type(err).__name__)
                        continue
                    if r.status_code != 503:
                        break
                t1 = time.perf_counter()
                rec = {"name": name, "tries": tries, "start": t0, "end": t1, "latency_ms": (t1 - t0) * 1000}
                if tries[-1] == 200:
                    a = r.json()
                    line = pose_line(name, Pose(np.array(a["qvec"]), np.array(a["tvec"]))) if a["success"] else ""
                    rec.update(identical=line == reference.get(name, ""), success=a["success"],
                               localize_ms=a["time_total_ms"], server_ms=a["server_ms"]["wait_and_localize"])
                records[i] = rec
                done[0] += 1
                if on_done is not None:
                    on_done(done[0])

    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), deadline)
    return {"records": records, "done": done[0]}


def summarize(records: list[dict]) -> dict:
    got = [r for r in records if r]  # None: never answered (lost)
    ok = [r for r in got if r["tries"][-1] == 200]
    lat = [r["latency_ms"] for r in ok]
    wall = max(r["end"] for r in got) - min(r["start"] for r in got)
    return {"requests": len(records), "answered_200": len(ok),
            "lost_or_failed": len(records) - len(ok),
            "status_503": sum(t == 503 for r in got for t in r["tries"]),
            "other_errors": sorted({str(t) for r in got for t in r["tries"] if t not in (200, 503)}),
            "identical_to_cli": sum(r.get("identical", False) for r in ok),
            "localized": sum(r.get("success", False) for r in ok),
            "wall_s": round(wall, 2), "requests_per_s": round(len(records) / wall, 2),
            "latency_ms": {"p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99), "max": pct(lat, 100)},
            "localize_ms_p50": pct([r["localize_ms"] for r in ok], 50),
            "localize_ms_p50_per_100": [pct([r["localize_ms"] for r in ok[i:i + 100]], 50)
                                        for i in range(0, len(ok), 100)],
            "server_ms_p50": pct([r["server_ms"] for r in ok], 50)}


# ---------------------------------------------------------------- bad inputs


def png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def bad_inputs(url: str, jpeg: bytes, name: str, reference: dict[str, str]) -> list[dict]:
    import httpx

    from pramloc.geometry import Pose
    from pramloc.io import pose_line

    path = "/v1/maps/kitchen/localize"

    def chunked():
        for _ in range(30):
            yield b"\0" * 1_000_000

    cases = [
        ("truncated JPEG (first half)", path, jpeg[: len(jpeg) // 2], AUTH),
        ("PNG declaring 100000 x 100000 pixels", path, png_declaring(100_000, 100_000), AUTH),
        ("text file", path, b"this is not an image, just text\n" * 20, AUTH),
        ("empty body", path, b"", AUTH),
        ("30 MB upload (Content-Length)", path, os.urandom(30_000_000), AUTH),
        ("30 MB upload (chunked, no length)", path, chunked, AUTH),
        ("wrong token", path, jpeg, {"Authorization": "Bearer wrong"}),
        ("no token", path, jpeg, {}),
        ("map name '..' (raw path /v1/maps/../localize)", b"/v1/maps/../localize", jpeg, AUTH),
        ("map name '../../etc' (raw path /v1/maps/../../etc/localize)", b"/v1/maps/../../etc/localize", jpeg, AUTH),
        ("map name '..%2F..%2Fkitchen' (encoded)", "/v1/maps/..%2F..%2Fkitchen/localize", jpeg, AUTH),
        ("unknown map", "/v1/maps/nowhere/localize", jpeg, AUTH),
    ]
    out = []
    with httpx.Client(base_url=url, timeout=120) as c:
        for label, target, body, headers in cases:
            t0 = time.perf_counter()
            try:
                if isinstance(target, bytes):  # sent as written: httpx would normalize the '..'
                    import http.client

                    conn = http.client.HTTPConnection(httpx.URL(url).host, httpx.URL(url).port, timeout=120)
                    conn.request("POST", target.decode(), body=body, headers=headers)
                    resp = conn.getresponse()
                    status, answer = resp.status, json.loads(resp.read())
                    conn.close()
                else:
                    r = c.post(target, content=body() if callable(body) else body, params={"camera": CAMERA},
                               headers={**headers, "Content-Type": "application/octet-stream"})
                    status, answer = r.status_code, r.json()
            except (httpx.HTTPError, OSError, ValueError) as err:
                status, answer = type(err).__name__, {}
            ms = (time.perf_counter() - t0) * 1000
            after = c.post(path, content=jpeg, params={"camera": CAMERA, "name": name}, headers=AUTH)
            a = after.json()
            still = (after.status_code == 200 and
                     pose_line(name, Pose(np.array(a["qvec"]), np.array(a["tvec"]))) == reference[name])
            out.append({"input": label, "status": status, "error": answer.get("error"), "json": bool(answer),
                        "ms": round(ms, 1), "then_real_query_identical": still})
            print(f"  {label:60s} -> {status} {answer.get('error', '')[:100]}  (then a real query: "
                  f"{'ok' if still else 'FAILED'})")
    return out


# ---------------------------------------------------------------- main


class OtherCPU:
    """CPU seconds used meanwhile by processes outside this benchmark's process tree (other
    work on a shared machine disturbs the timings: recorded per phase)."""

    def __enter__(self):
        self.start = self._snapshot()
        return self

    def __exit__(self, *exc):
        end = self._snapshot()
        self.seconds = round(sum(max(0.0, t - self.start.get(pid, 0.0)) for pid, t in end.items()), 1)

    @staticmethod
    def _snapshot() -> dict[int, float]:
        import psutil

        me = psutil.Process()
        mine = {me.pid} | {p.pid for p in me.children(recursive=True)}
        out = {}
        for p in psutil.process_iter(["cpu_times"]):
            if p.pid not in mine and p.info["cpu_times"] is not None:
                out[p.pid] = p.info["cpu_times"].user + p.info["cpu_times"].system
        return out


def main() -> None:
    from pramloc.parallel import num_cores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--map", type=Path, default=OUT / "serve" / "kitchen")
    ap.add_argument("--workers", type=int, default=num_cores())
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2, help="CLI then server, this many times (drift on a shared machine)")
    ap.add_argument("--fault-requests", type=int, default=300)
    ap.add_argument("--work", type=Path, default=OUT / "serve")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve.json")
    args = ap.parse_args()
    if not (args.map / "manifest.json").is_file():
        sys.exit(f"no map at {args.map}; build it first (see --help)")
    args.work.mkdir(parents=True, exist_ok=True)
    names = [line.strip() for line in SPLIT.read_text().splitlines() if line.strip()]
    w, n = str(args.workers), args.requests
    load_before = os.getloadavg()
    report: dict = {**stamp(), "cores": os.cpu_count(), "map": str(args.map), "workers": args.workers,
                    "clients": args.clients, "queries": len(names), "requests": n, "camera": CAMERA}

    print(f"[1/6] reference: pramloc localize --dataset 7scenes ({len(names)} queries, --workers {w})")
    ref_path = args.work / "cli_reference.txt"
    ref_wall = run_cli(["localize", str(args.map), "--dataset", "7scenes", "--root", str(KITCHEN), "--queries",
                        str(SPLIT), "--out", str(ref_path), "--workers", w])
    reference = {line.split()[0]: line + "\n" for line in ref_path.read_text().splitlines()}
    report["reference"] = {"results": str(ref_path), "localized": len(reference), "wall_s": round(ref_wall, 2)}
    links, full, short = repeat_links(names, n, args.work)
    images = {q: (KITCHEN / q).read_bytes() for q in names}
    sequence = [(names[i % len(names)], images[names[i % len(names)]]) for i in range(n)]

    t0 = time.perf_counter()
    server = ServerProcess(args.map, args.workers)
    report["server_start_s"] = round(time.perf_counter() - t0, 2)
    warm = asyncio.run(load(server.url, sequence[: args.clients], args.clients, reference))
    assert all(r["tries"] == [200] for r in warm["records"]), warm

    report["rounds"] = []
    for k in range(args.rounds):
        print(f"[2/6] round {k + 1}/{args.rounds}: CLI over {n} and 20 queries of the sequence (--workers {w})")
        cli_out = args.work / f"cli_{n}.txt"
        cli_usage: dict = {}
        with OtherCPU() as other_cli:
            wall_short = run_cli(["localize", str(args.map), "--images", str(links), "--queries", str(short),
                                  "--out", str(args.work / "cli_20.txt"), "--workers", w])
            wall_full = run_cli(["localize", str(args.map), "--images", str(links), "--queries", str(full),
                                 "--out", str(cli_out), "--workers", w], cli_usage)
        same = all(reference.get(line.split()[0].split("/", 1)[1], "").split()[1:] == line.split()[1:]
                   for line in cli_out.read_text().splitlines())
        cli = {"wall_s_20": round(wall_short, 2), f"wall_s_{n}": round(wall_full, 2),
               "end_to_end_per_s": round(n / wall_full, 2), "steady_per_s": round((n - 20) / (wall_full - wall_short), 2),
               "results_identical_to_reference": same, "other_processes_cpu_s": other_cli.seconds,
               "usage": cli_usage}
        print(f"  CLI: {cli['steady_per_s']} queries/s steady, {cli['end_to_end_per_s']} end to end "
              f"({wall_full:.1f} s for {n}, {wall_short:.1f} s for 20); other processes used {other_cli.seconds} "
              "CPU s meanwhile")

        print(f"[3/6] round {k + 1}/{args.rounds}: server, {args.clients} clients, {n} requests")
        counter = [0]
        sampler = MemorySampler(server, lambda: counter[0])
        sampler.start()
        procs = server.processes()
        u0, bench0 = process_usage(procs), os.times()
        with OtherCPU() as other_srv:
            run = asyncio.run(load(server.url, sequence, args.clients, reference,
                                   on_done=lambda d: counter.__setitem__(0, d)))
        u1, bench1 = process_usage(procs), os.times()
        sampler.stop.set()
        sampler.join()
        s = summarize(run["records"])
        s["memory"] = {"first_100": sampler.window(0, 100), "last_100": sampler.window(n - 100, n + 1),
                       "processes": max((x[3] for x in sampler.samples), default=0)}
        s["throughput_vs_cli_steady"] = round(s["requests_per_s"] / cli["steady_per_s"], 3)
        s["throughput_vs_cli_end_to_end"] = round(s["requests_per_s"] / cli["end_to_end_per_s"], 3)
        s["other_processes_cpu_s"] = other_srv.seconds
        s["usage"] = {"server": usage_delta(u0, u1),  # the server process and its workers
                      "load_generator_cpu_s": round(bench1.user + bench1.system - bench0.user - bench0.system, 1)}
        report["rounds"].append({"cli": cli, "server": s})
        print(f"  server: {s['requests_per_s']} requests/s (x{s['throughput_vs_cli_steady']} of the CLI's steady "
              f"rate, x{s['throughput_vs_cli_end_to_end']} of its end-to-end rate), p50 {s['latency_ms']['p50']} ms, "
              f"p99 {s['latency_ms']['p99']} ms; {s['answered_200']}/{n} answered, {s['identical_to_cli']} identical "
              f"to the CLI; memory first 100 {s['memory']['first_100']}, last 100 {s['memory']['last_100']}; "
              f"other processes used {other_srv.seconds} CPU s meanwhile")

    print("[3b] one client, 100 requests (latency without queueing)")
    single = summarize(asyncio.run(load(server.url, sequence[:100], 1, reference))["records"])
    report["one_client"] = single
    print(f"  p50 {single['latency_ms']['p50']} ms, p99 {single['latency_ms']['p99']} ms (localization itself "
          f"p50 {single['localize_ms_p50']} ms); {single['identical_to_cli']}/100 identical")

    print(f"[4/6] fault: {args.fault_requests} requests, one worker SIGKILLed after 100")
    killed: dict = {}

    def kill_after(done: int):
        if done == 100 and not killed:
            victim = server.processes()[1]
            killed.update(pid=victim.pid, at=time.perf_counter())
            os.kill(victim.pid, signal.SIGKILL)

    t_fault = time.perf_counter()
    fault = asyncio.run(load(server.url, sequence[: args.fault_requests], args.clients, reference,
                             on_done=kill_after, retries=3, deadline=300))
    f = summarize(fault["records"])
    deadline = time.time() + 120
    while len(server.processes()) < args.workers + 1 and time.time() < deadline:
        time.sleep(0.1)
    f.update(killed_pid=killed.get("pid"), workers_after=len(server.processes()) - 1,
             replaced=killed.get("pid") not in [p.pid for p in server.processes()],
             retried_requests=sum(len(r["tries"]) > 1 for r in fault["records"]),
             run_s=round(time.perf_counter() - t_fault, 1))
    import httpx

    metrics = httpx.get(server.url + "/metrics").text
    f["worker_restarts_metric"] = next((float(line.split()[-1]) for line in metrics.splitlines()
                                        if line.startswith("pramloc_worker_restarts_total")), None)
    report["fault"] = f
    print(f"  fault: {f['status_503']} answer(s) 503, retried {f['retried_requests']}, {f['answered_200']}/"
          f"{f['requests']} answered in the end, {f['identical_to_cli']} identical; workers after "
          f"{f['workers_after']} (replaced: {f['replaced']}); other errors {f['other_errors']}")

    print("[5/6] bad inputs")
    report["bad_inputs"] = bad_inputs(server.url, images[names[0]], names[0], reference)

    print("[6/6] SIGTERM")
    server.proc.send_signal(signal.SIGTERM)
    report["shutdown"] = {"exit_code": server.proc.wait(120), "last_line": server.lines[-1] if server.lines else ""}
    print(f"  exit code {report['shutdown']['exit_code']}: {report['shutdown']['last_line']}")
    report["load_before"], report["load_after"] = load_before, os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"load average before {load_before}, after {report['load_after']}; wrote {args.out}")


if __name__ == "__main__":
    main()
