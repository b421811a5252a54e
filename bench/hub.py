"""Benchmark the ukedge hub against CNCF distribution (Debian's docker-registry), same client.

Measures, for both registries in the same run:

* push and pull throughput of one 256 MiB blob (1 client) and of 8 clients with 32 MiB each;
* push and pull throughput of 200 blobs of 64 KiB with 1 and with 8 concurrent clients;
* p50/p99 latency of manifest GET with 8 concurrent clients;
* peak RSS of the registry process (VmHWM) after the 256 MiB push.

Both servers run as subprocesses on 127.0.0.1 with filesystem storage in a temp dir; the client
is the same small httpx client (POST, then PUT ?digest= with a streamed body; GET streamed).
Prints a table with ratios and writes it to /work/notes/hub-bench.md (or --out).

    python bench/hub.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
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

MiB = 1 << 20
CHUNK = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def bench_server(server: Server, files: dict[str, object], quick: bool) -> dict[str, float]:
    res: dict[str, float] = {}
    url = server.url
    big_path, big_digest = files["big"]  # type: ignore[misc]
    parts = files["parts"]  # type: ignore[assignment]
    small = files["small"]  # type: ignore[assignment]
    big_mib = big_path.stat().st_size / MiB

    def push_big(c: httpx.Client) -> None:
        push_blob(c, "bench/big", big_digest, big_path)

    res["big_push_1"] = big_mib / timed(lambda: run_parallel(1, [push_big], url))
    res["rss_push"] = server.peak_rss() / MiB

    def pull_big(c: httpx.Client) -> None:
        pull_blob(c, "bench/big", big_digest)

    res["big_pull_1"] = big_mib / timed(lambda: run_parallel(1, [pull_big], url))

    part_jobs = [
        (lambda c, i=i, p=p, d=d: push_blob(c, f"bench/part{i}", d, p))
        for i, (p, d) in enumerate(parts)
    ]
    part_mib = sum(p.stat().st_size for p, _ in parts) / MiB
    res["big_push_8"] = part_mib / timed(lambda: run_parallel(8, part_jobs, url))
    pull_jobs = [
        (lambda c, i=i, d=d: pull_blob(c, f"bench/part{i}", d)) for i, (_, d) in enumerate(parts)
    ]
    res["big_pull_8"] = part_mib / timed(lambda: run_parallel(8, pull_jobs, url))

    for workers in (1, 8):
        repo = f"bench/small{workers}"
        jobs: list[Callable[[httpx.Client], object]] = [
            (lambda c, r=repo, d=d, b=b: push_blob(c, r, d, b)) for d, b in small
        ]
        start = time.perf_counter()
        run_parallel(workers, jobs, url)
        res[f"small_push_{workers}"] = len(small) / (time.perf_counter() - start)
        jobs = [(lambda c, r=repo, d=d: pull_blob(c, r, d)) for d, _ in small]
        start = time.perf_counter()
        run_parallel(workers, jobs, url)
        res[f"small_pull_{workers}"] = len(small) / (time.perf_counter() - start)

    # Manifest GET latency under 8 concurrent clients.
    config = b'{"architecture":"amd64","os":"linux"}'
    cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
    layer_digest, layer = small[0]
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
        push_blob(c, "bench/small1", cdigest, config)
        r = c.put(
            "/v2/bench/small1/manifests/v1",
            content=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        if r.status_code != 201:
            raise RuntimeError(f"manifest PUT: {r.status_code} {r.text}")
    per_client = 100 if quick else 400
    latencies: list[float] = []
    lock = threading.Lock()
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}

    def hammer() -> None:
        mine = []
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(10):
                c.get("/v2/bench/small1/manifests/v1", headers=accept)
            for _ in range(per_client):
                t = time.perf_counter()
                r = c.get("/v2/bench/small1/manifests/v1", headers=accept)
                mine.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(f"manifest GET: {r.status_code}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    res["manifest_p50"] = statistics.median(latencies) * 1000
    res["manifest_p99"] = latencies[int(len(latencies) * 0.99) - 1] * 1000
    return res


ROWS = [
    ("big_push_1", "push 1×256 MiB, 1 client", "MiB/s", True),
    ("big_pull_1", "pull 1×256 MiB, 1 client", "MiB/s", True),
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


def table(ours: dict[str, float], theirs: dict[str, float]) -> str:
    lines = [
        "| measurement | ukedge hub | distribution 2.8 | ratio (ukedge/distribution) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label, unit, _higher in ROWS:
        a, b = ours[key], theirs[key]
        ratio = a / b if b else float("nan")
        lines.append(f"| {label} | {a:.1f} {unit} | {b:.1f} {unit} | {ratio:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB instead of 256 MiB")
    parser.add_argument("--out", default="/work/notes/hub-bench.md")
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
        results = {}
        for start in (start_ukedge, start_distribution):
            server = start(tmp)
            try:
                print(f"benchmarking {server.name} at {server.url} …", file=sys.stderr)
                results[server.name] = bench_server(server, files, args.quick)
            finally:
                server.stop()
    text = table(results["ukedge hub"], results["distribution"])
    cpu = os.cpu_count()
    header = (
        f"# Hub benchmark\n\n`python bench/hub.py{' --quick' if args.quick else ''}` on "
        f"{cpu} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Same httpx client, "
        "same machine, same run; filesystem storage in a temp dir for both.\n\n"
    )
    print(text)
    if args.out:
        Path(args.out).write_text(header + text + "\n")


if __name__ == "__main__":
    main()
