from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from ukedge.host import PortMapping, RunRequest


def test_run_request_rejects_bad_env_names_and_sizes() -> None:
    with pytest.raises(ValidationError, match="invalid environment variable name"):
        RunRequest(image="x", env={"A=B": "1"})
    with pytest.raises(ValidationError, match="memory_mib"):
        RunRequest(image="x", memory_mib=1)


def test_auto_remove_excludes_another_run_after_the_end() -> None:
    assert RunRequest(image="x", auto_remove=True).auto_remove
    with pytest.raises(ValidationError, match="cannot be combined with a restart policy"):
        RunRequest(image="x", auto_remove=True, restart={"name": "on-failure"})
    with pytest.raises(ValidationError, match="cannot be combined with on_demand"):
        RunRequest(
            image="x",
            auto_remove=True,
            on_demand=True,
            ports=[PortMapping(host_port=18080, guest_port=8080)],
        )


_FIRST_USE_IN_THREADS = """
import sys, threading
from ukedge.host import Instance, RunRequest
assert not Instance.__pydantic_complete__  # built on first use, not at import
doc = {"id": "abc123", "name": "one", "image": "app:1", "image_digest": "sha256:" + "0" * 64,
       "state": "created", "created_at": 1.0, "memory_mib": 64, "vcpus": 1, "workdir": "/w",
       "ports": [{"host_port": 8080, "guest_port": 80}]}
errors = []
start = threading.Barrier(16)

def use() -> None:
    try:
        start.wait()
        assert Instance.model_validate(doc).ports[0].guest_port == 80
        assert RunRequest(image="app:1").image == "app:1"
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=use) for _ in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(errors)
sys.exit(1 if errors else 0)
"""


def test_models_built_on_first_use_are_safe_to_use_from_many_threads_at_once() -> None:
    """The node's models defer their build to first use (``ukedge ps`` builds one of twelve);
    the agent's threads may all get there at once, which pydantic >= 2.14 serialises."""
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_USE_IN_THREADS], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
