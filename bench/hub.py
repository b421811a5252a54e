"""Benchmark the ukedge hub against CNCF distribution (Debian's docker-registry), same client.

Measures, for both registries in the same run:

* push and pull throughput of one 256 MiB blob (1 client) and of 8 clients with 32 MiB each;
* push and pull throughput of 200 blobs of 64 KiB with 1 and with 8 concurrent clients;
* p50/p99 latency of manifest GET with 8 concurrent clients;
* peak RSS of the registry process (VmHWM) after the 256 MiB push.

Both servers run as subprocesses on 127.0.0.1 with filesystem storage in a temp dir; the client
is the same small httpx client (POST, then PUT ?digest= with a streamed body; GET streamed).
Prints a table with ratios; --out also writes it, with a header naming the run, to a file.

    python bench/hub.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from _common import free_port

MiB = 1 << 20
CHUNK = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/v2/", timeout=1).status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


class Server:
    def __init__(self, name: str, argv: list[str], url: str, env: dict[str, str] | None) -> None:
        self.name = name
        self.url = url
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        wait_ready(url, self.proc)

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_ukedge(tmp: Path) -> Server:
    port = free_port()
    exe = Path(sys.executable).with_name("ukedge")
    argv = [str(exe), "hub", "serve", "--addr", f"127.0.0.1:{port}", "--data", str(tmp / "ukedge")]
    env = dict(os.environ, UKEDGE_HOME=str(tmp / "home"))
    return Server("ukedge hub", argv, f"http://127.0.0.1:{port}", env)


def start_distribution(tmp: Path) -> Server:
    port = free_port()
    root = tmp / "distribution"
    root.mkdir()
    config = tmp / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    return Server("distribution", [binary, "serve", str(config)], f"http://127.0.0.1:{port}", None)


# -- the client -------------------------------------------------------------------------------


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def push_blob(client: httpx.Client, repo: str, digest: str, body: bytes | Path) -> None:
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    if r.status_code != 202:
        raise RuntimeError(f"POST upload: {r.status_code} {r.text}")
    location = r.headers["location"]
    content = file_chunks(body) if isinstance(body, Path) else body
    size = body.stat().st_size if isinstance(body, Path) else len(body)
    sep = "&" if "?" in location else "?"
    r = client.put(
        f"{location}{sep}digest={digest}",
        content=content,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
    )
    if r.status_code != 201:
        raise RuntimeError(f"PUT upload: {r.status_code} {r.text}")


def pull_blob(client: httpx.Client, repo: str, digest: str) -> int:
    h = hashlib.sha256()
    n = 0
    with client.stream("GET", f"/v2/{repo}/blobs/{digest}") as r:
        if r.status_code != 200:
            raise RuntimeError(f"GET blob: {r.status_code}")
        for chunk in r.iter_bytes(CHUNK):
            h.update(chunk)
            n += len(chunk)
    if "sha256:" + h.hexdigest() != digest:
        raise RuntimeError("pulled blob has the wrong digest")
    return n


def make_file(path: Path, size: int, seed: int) -> str:
    h = hashlib.sha256()
    block = hashlib.sha256(str(seed).encode()).digest() * (CHUNK // 32)
    with path.open("wb") as f:
        left = size
        i = 0
        while left:
            part = (block[i % 32 :] + block[: i % 32])[: min(CHUNK, left)]
            f.write(part)
            h.update(part)
            left -= len(part)
            i += 1
    return "sha256:" + h.hexdigest()


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_parallel(workers: int, jobs: list[Callable[[httpx.Client], object]], url: str) -> None:
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()

    def get_client() -> httpx.Client:
        c = getattr(local, "client", None)
        if c is None:
            c = httpx.Client(base_url=url, timeout=300)
            local.client = c
            with lock:
                clients.append(c)
        return c

    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(lambda j=job: j(get_client())) for job in jobs]:
            f.result()
    for c in clients:
        c.close()


class Bench:
    """The measurements, each runnable against any server any number of times."""

    def __init__(self, files: dict[str, object], quick: bool) -> None:
        self.big_path, self.big_digest = files["big"]  # type: ignore[misc]
        self.parts: list[tuple[Path, str]] = files["parts"]  # type: ignore[assignment]
        self.small: list[tuple[str, bytes]] = files["small"]  # type: ignore[assignment]
        self.quick = quick
        self.big_mib = self.big_path.stat().st_size / MiB
        self.part_mib = sum(p.stat().st_size for p, _ in self.parts) / MiB

    def big_push_1(self, url: str, rep: int) -> float:
        job = lambda c: push_blob(c, f"bench/big{rep}", self.big_digest, self.big_path)  # noqa: E731
        return self.big_mib / timed(lambda: run_parallel(1, [job], url))

    def big_pull_1(self, url: str, rep: int) -> float:
        job = lambda c: pull_blob(c, "bench/big0", self.big_digest)  # noqa: E731
        return self.big_mib / timed(lambda: run_parallel(1, [job], url))

    def big_pull_curl(self, url: str, rep: int) -> float:
        """The same pull with curl (C, writes to /dev/null): the server's side of the pipe."""
        blob_url = f"{url}/v2/bench/big0/blobs/{self.big_digest}"
        argv = ["curl", "-sSf", "-o", "/dev/null", blob_url]
        return self.big_mib / timed(lambda: subprocess.run(argv, check=True))

    def big_push_8(self, url: str, rep: int) -> float:
        jobs = [
            (lambda c, i=i, p=p, d=d: push_blob(c, f"bench/part{i}-{rep}", d, p))
            for i, (p, d) in enumerate(self.parts)
        ]
        return self.part_mib / timed(lambda: run_parallel(8, jobs, url))

    def big_pull_8(self, url: str, rep: int) -> float:
        jobs = [
            (lambda c, i=i, d=d: pull_blob(c, f"bench/part{i}-0", d))
            for i, (_, d) in enumerate(self.parts)
        ]
        return self.part_mib / timed(lambda: run_parallel(8, jobs, url))

    def _small_push(self, url: str, rep: int, workers: int) -> float:
        repo = f"bench/small{workers}-{rep}"
        jobs = [(lambda c, d=d, b=b: push_blob(c, repo, d, b)) for d, b in self.small]
        return len(self.small) / timed(lambda: run_parallel(workers, jobs, url))

    def _small_pull(self, url: str, workers: int) -> float:
        repo = f"bench/small{workers}-0"
        jobs = [(lambda c, d=d: pull_blob(c, repo, d)) for d, _ in self.small]
        return len(self.small) / timed(lambda: run_parallel(workers, jobs, url))

    def small_push_1(self, url: str, rep: int) -> float:
        return self._small_push(url, rep, 1)

    def small_pull_1(self, url: str, rep: int) -> float:
        return self._small_pull(url, 1)

    def small_push_8(self, url: str, rep: int) -> float:
        return self._small_push(url, rep, 8)

    def small_pull_8(self, url: str, rep: int) -> float:
        return self._small_pull(url, 8)

    def setup_manifest(self, url: str) -> None:
        config = b'{"architecture":"amd64","os":"linux"}'
        cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
        layer_digest, layer = self.small[0]
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": cdigest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            }
        ).encode()
        with httpx.Client(base_url=url, timeout=30) as c:
            push_blob(c, "bench/small1-0", cdigest, config)
            r = c.put(
                "/v2/bench/small1-0/manifests/v1",
                content=manifest,
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            )
            if r.status_code != 201:
                raise RuntimeError(f"manifest PUT: {r.status_code} {r.text}")

    def manifest_latency(self, url: str) -> tuple[float, float]:
        """8 client processes (not threads: no shared GIL) on keep-alive connections."""
        per_client = 100 if self.quick else 300
        with multiprocessing.Pool(8) as pool:
            runs = pool.starmap(_hammer, [(url, per_client)] * 8)
        latencies = sorted(x for run in runs for x in run)
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
        return p50, p99


def _hammer(url: str, count: int) -> list[float]:
    """One latency client: a bare http.client connection, so the client adds little noise."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    path = "/v2/bench/small1-0/manifests/v1"
    out = []
    for i in range(count + 10):
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"manifest GET: {response.status}")
        if i >= 10:
            out.append(time.perf_counter() - start)
    conn.close()
    return out


THROUGHPUT = [
    "big_push_1",
    "big_pull_1",
    "big_pull_curl",
    "big_push_8",
    "big_pull_8",
    "small_push_1",
    "small_pull_1",
    "small_push_8",
    "small_pull_8",
]


def run_all(servers: list[Server], bench: Bench, reps: int) -> dict[str, dict[str, float]]:
    """Each measurement alternates between the servers, ``reps`` times; the best run counts.

    Alternating (and flipping the order each round) keeps slow drift in the machine's load
    from favouring whichever server happens to run first.
    """
    res: dict[str, dict[str, float]] = {s.name: {} for s in servers}
    for key in THROUGHPUT:
        for rep in range(reps):
            order = servers if rep % 2 == 0 else servers[::-1]
            for server in order:
                value = getattr(bench, key)(server.url, rep)
                res[server.name][key] = max(res[server.name].get(key, 0.0), value)
                if key == "big_push_1" and rep == 0:
                    res[server.name]["rss_push"] = server.peak_rss() / MiB
            print(
                f"  {key}: " + ", ".join(f"{n} {r[key]:.1f}" for n, r in res.items()),
                file=sys.stderr,
            )
    for server in servers:
        bench.setup_manifest(server.url)
    for rep in range(reps):
        order = servers if rep % 2 == 0 else servers[::-1]
        for server in order:
            p50, p99 = bench.manifest_latency(server.url)
            mine = res[server.name]
            mine["manifest_p50"] = min(mine.get("manifest_p50", 1e9), p50)
            mine["manifest_p99"] = min(mine.get("manifest_p99", 1e9), p99)
    return res


ROWS = [
    ("big_push_1", "push 1×256 MiB, 1 client", "MiB/s", True),
    ("big_pull_1", "pull 1×256 MiB, 1 client", "MiB/s", True),
    ("big_pull_curl", "pull 1×256 MiB, 1 client (curl)", "MiB/s", True),
    ("big_push_8", "push 8×32 MiB, 8 clients", "MiB/s", True),
    ("big_pull_8", "pull 8×32 MiB, 8 clients", "MiB/s", True),
    ("small_push_1", "push 200×64 KiB, 1 client", "blobs/s", True),
    ("small_pull_1", "pull 200×64 KiB, 1 client", "blobs/s", True),
    ("small_push_8", "push 200×64 KiB, 8 clients", "blobs/s", True),
    ("small_pull_8", "pull 200×64 KiB, 8 clients", "blobs/s", True),
    ("manifest_p50", "manifest GET p50, 8 clients", "ms", False),
    ("manifest_p99", "manifest GET p99, 8 clients", "ms", False),
    ("rss_push", "peak server RSS after 256 MiB push", "MiB", False),
]


def table(ours: dict[str, float], theirs: dict[str, float], big_mib: int) -> str:
    lines = [
        "| measurement | ukedge hub | distribution 2.8 | ratio (ukedge/distribution) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label, unit, _higher in ROWS:
        a, b = ours[key], theirs[key]
        ratio = a / b if b else float("nan")
        label = label.replace("256", str(big_mib)).replace("32 MiB", f"{big_mib // 8} MiB")
        lines.append(f"| {label} | {a:.1f} {unit} | {b:.1f} {unit} | {ratio:.2f}× |")
    return "\n".join(lines)


def targets(ours: dict[str, float], theirs: dict[str, float]) -> str:
    """The issue's targets, met or not, in this run."""
    checks = [
        ("large-blob push ≥ 0.8× distribution", ours["big_push_1"] / theirs["big_push_1"], 0.8),
        ("large-blob pull ≥ 0.8× distribution", ours["big_pull_1"] / theirs["big_pull_1"], 0.8),
    ]
    lines = ["| target | this run | met |", "| --- | ---: | :---: |"]
    for label, ratio, want in checks:
        lines.append(f"| {label} | {ratio:.2f}× | {'yes' if ratio >= want else 'no'} |")
    p99 = ours["manifest_p99"]
    lines.append(
        f"| manifest GET p99 ≤ 10 ms (8 clients) | {p99:.1f} ms | {'yes' if p99 <= 10 else 'no'} |"
    )
    rss = ours["rss_push"]
    met = "yes" if rss * 1.048576 <= 150 else "no"
    lines.append(f"| peak hub RSS during 256 MiB push ≤ 150 MB | {rss:.0f} MiB | {met} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB instead of 256 MiB")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--reps", type=int, default=3, help="runs per measurement (best counts)")
    args = parser.parse_args()
    big_size = (64 if args.quick else 256) * MiB
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmpdir:
        tmp = Path(tmpdir)
        big = tmp / "big.bin"
        files: dict[str, object] = {"big": (big, make_file(big, big_size, 1))}
        parts = []
        for i in range(8):
            p = tmp / f"part{i}.bin"
            parts.append((p, make_file(p, big_size // 8, 100 + i)))
        files["parts"] = parts
        small = []
        for _ in range(200):
            data = os.urandom(64 * 1024)
            small.append(("sha256:" + hashlib.sha256(data).hexdigest(), data))
        files["small"] = small
        servers = [start_ukedge(tmp), start_distribution(tmp)]
        try:
            results = run_all(servers, Bench(files, args.quick), args.reps)
        finally:
            for server in servers:
                server.stop()
    text = table(results["ukedge hub"], results["distribution"], big_size // MiB)
    cpu = os.cpu_count()
    header = (
        f"# Hub benchmark\n\n`python bench/hub.py{' --quick' if args.quick else ''}` on "
        f"{cpu} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Same httpx client, "
        "same machine, same run; filesystem storage in a temp dir for both. Each measurement "
        f"alternates between the two servers {args.reps} times and the best run counts "
        "(highest throughput, lowest latency), so background load hits both alike.\n\n"
    )
    text += "\n\n" + targets(results["ukedge hub"], results["distribution"])
    print(text)
    if args.out:
        Path(args.out).write_text(header + text + "\n")


if __name__ == "__main__":
    main()
