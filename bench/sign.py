#!/usr/bin/env python3
"""Signature benchmark (issue 13): what the node's signature policy adds to a start and a pull.

In one process, against a real hub over HTTP on loopback, it pulls a signed image into two
nodes, one without a policy and one with a policy of two trusted keys (a rotation; the image
is signed by the second, so verification tries both), and times:

* the check before a start (the instance manager's ``_check_image``, the code every start and
  restart runs): without a policy; with the policy and the verdict cached; and the first
  verification (a fresh gate, as after an agent restart: read the kept signatures, parse,
  ECDSA-verify against each key);
* a pull of the same image already cached, without and with the policy (the policy adds the
  signature fetch: the referrers API, the ``.sig`` tag and each payload blob).

Samples are interleaved (one of each per round) so that load on this shared machine hits all
alike; medians and 90th percentiles are reported. No VM boots: what a boot costs is in
bench/boot.py; this is only what the policy adds to it.

Usage: .venv/bin/python bench/sign.py [--runs 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from kit.hub import run_hub  # noqa: E402  (tests/kit: the tests' in-process hub and images)
from kit.registry import make_image  # noqa: E402
from ukedge.host import NodeLayout, RunRequest, open_node, run_request  # noqa: E402
from ukedge.host.policy import SignatureGate, load_policy  # noqa: E402
from ukedge.image import ImageStore, generate_private_key  # noqa: E402
from ukedge.registry import RegistryClient, push, sign_image  # noqa: E402

console = Console()


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[int(0.9 * (len(ordered) - 1))] * 1e3


def _time(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ukedge-bench-sign-") as tmp_name:
        tmp = Path(tmp_name)
        old, new = generate_private_key(), generate_private_key()
        (tmp / "old.pub").write_bytes(old.public.pem())
        (tmp / "new.pub").write_bytes(new.public.pem())
        (tmp / "policy.toml").write_text('[[rule]]\nkeys = ["old.pub", "new.pub"]\n')
        policy = load_policy(tmp / "policy.toml")
        with run_hub(tmp / "hub", auth="off") as hub:
            host = hub.host
            source = ImageStore(tmp / "src")
            make_image(  # a kernel and one app layer, gzip of random bytes: sizes as in use
                source,
                "app:1",
                kernel=gzip.compress(os.urandom(1 << 20)),
                app=gzip.compress(os.urandom(64 << 10)),
            )
            ref = f"{host}/apps/web:1"
            digest = push(source, "app:1", ref)
            with RegistryClient(host, insecure=True, state_dir=tmp / "signer") as client:
                sign_image(client, "apps/web", "1", new)

            plain = open_node(NodeLayout.data_dir(tmp / "plain"))
            guarded = open_node(NodeLayout.data_dir(tmp / "guarded"), policy=policy)
            plain.pull(ref)
            guarded.pull(ref)
            instance = guarded.manager.create(_request(ref))
            plain_instance = plain.manager.create(_request(ref))
            gate = guarded.cache.gate
            assert gate is not None

            samples: dict[str, list[float]] = {
                "start check, no policy": [],
                "start check, policy, cached verdict": [],
                "start check, policy, first verification": [],
                "pull (cached image), no policy": [],
                "pull (cached image), policy (fetches signatures)": [],
            }
            guarded.manager._check_image(instance.image, instance.image_digest, instance)
            for i in range(args.runs):
                samples["start check, no policy"].append(
                    _time(
                        lambda: plain.manager._check_image(
                            plain_instance.image, plain_instance.image_digest, plain_instance
                        )
                    )
                )
                samples["start check, policy, cached verdict"].append(
                    _time(
                        lambda: guarded.manager._check_image(
                            instance.image, instance.image_digest, instance
                        )
                    )
                )
                fresh = SignatureGate(policy, guarded.manager.store.root)
                samples["start check, policy, first verification"].append(
                    _time(functools.partial(fresh.check, instance.image, instance.image_digest))
                )
                if i % 10 == 0:
                    samples["pull (cached image), no policy"].append(_time(lambda: plain.pull(ref)))
                    samples["pull (cached image), policy (fetches signatures)"].append(
                        _time(lambda: guarded.pull(ref))
                    )
            for node, made in ((plain, plain_instance), (guarded, instance)):
                node.manager.remove(made.id, force=True)

    table = Table(title=f"signature policy cost ({args.runs} runs; pulls every 10th)")
    table.add_column("what")
    table.add_column("median ms", justify="right")
    table.add_column("p90 ms", justify="right")
    results: dict[str, dict[str, float]] = {}
    report: dict[str, object] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "digest": digest,
        "results": results,
    }
    for name, values in samples.items():
        median, p90 = _ms(values)
        table.add_row(name, f"{median:.3f}", f"{p90:.3f}")
        results[name] = {"median_ms": median, "p90_ms": p90, "n": len(values)}
    console.print(table)
    console.print(f"{report['machine']}, {report['date']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _request(ref: str) -> RunRequest:
    return run_request(image=ref, name="bench")


if __name__ == "__main__":
    main()
