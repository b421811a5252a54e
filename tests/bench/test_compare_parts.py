"""The comparison harness's pure parts: attack-surface counts, the OCI layout it writes and
reads back, the runtime config it gives runc and crun."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from compare._container import runtime_config
from compare._oci import unpack, write_layout
from compare._surface import du, kernel_options, seccomp_allowed, tree_counts

from ukedge.guest import CpioArchive


def test_tree_counts_files_and_executables(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "lib.so").write_bytes(b"\x7fELF" + b"\0" * 60)  # ELF, not marked +x
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "data.txt").write_text("hello")
    (tmp_path / "link").symlink_to("data.txt")  # not a regular file: not counted
    assert tree_counts(tmp_path) == {"files": 3, "executables": 2}
    assert du(tmp_path) == 64 + 10 + 5


def test_kernel_options_counts_built_in_and_modules(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        '# comment\nCONFIG_A=y\nCONFIG_B=m\nCONFIG_C="text"\n# CONFIG_D is not set\nCONFIG_E=y\n'
    )
    assert kernel_options(config) == {"built_in": 2, "modules": 1, "enabled": 3}


def test_seccomp_allowed_counts_unconditional_and_conditional(tmp_path: Path) -> None:
    profile = tmp_path / "seccomp.json"
    profile.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [
                    {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["bpf"], "action": "SCMP_ACT_ERRNO"},
                    {
                        "names": ["mount"],
                        "action": "SCMP_ACT_ALLOW",
                        "includes": {"caps": ["CAP_SYS_ADMIN"]},
                    },
                    {
                        "names": ["arch_prctl"],
                        "action": "SCMP_ACT_ALLOW",
                        "includes": {"arches": ["amd64"]},
                    },
                    {
                        "names": ["s390_pci_mmio_read"],
                        "action": "SCMP_ACT_ALLOW",
                        "includes": {"arches": ["s390x"]},
                    },
                    {
                        "names": ["personality"],
                        "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}],
                    },
                ],
            }
        )
    )
    assert seccomp_allowed(profile) == {"unconditional": 3, "with_conditions": 5}


def _initrd(tmp_path: Path, name: str, files: dict[str, bytes]) -> Path:
    archive = CpioArchive()
    for path, data in files.items():
        archive.add_file(path, data, mode=0o755 if path.endswith("bin") else 0o644)
    raw = tmp_path / f"{name}.cpio"
    archive.write_to(raw)
    out = tmp_path / f"{name}.gz"
    out.write_bytes(gzip.compress(raw.read_bytes()))
    return out


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs cpio (apt-get install cpio)")
def test_oci_layout_is_deterministic_and_reads_back(tmp_path: Path) -> None:
    runtime = _initrd(tmp_path, "runtime", {"/init": b"guest init", "/usr/bin": b"py"})
    app = _initrd(tmp_path, "app", {"/app/main.py": b"print(1)\n"})
    env = {"PORT": "8080"}
    one = write_layout([runtime, app], ["python3", "/app/main.py"], env, tmp_path / "one")
    two = write_layout([runtime, app], ["python3", "/app/main.py"], env, tmp_path / "two")
    assert (one.layout / "index.json").read_bytes() == (two.layout / "index.json").read_bytes()
    assert json.loads((one.layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    for blob in (one.layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    config = unpack(one.layout, one.tag, tmp_path / "rootfs")
    assert config["Entrypoint"] == ["python3", "/app/main.py"]
    assert "PORT=8080" in config["Env"]  # type: ignore[operator]
    assert any(str(e).startswith("PATH=") for e in config["Env"])  # type: ignore[attr-defined]
    assert (tmp_path / "rootfs" / "app" / "main.py").read_bytes() == b"print(1)\n"
    assert not (tmp_path / "rootfs" / "init").exists()  # the unikernel's PID 1 stays out
    if shutil.which("skopeo"):  # a third-party reader accepts the layout
        out = subprocess.run(
            ["skopeo", "inspect", "--raw", f"oci:{one.layout}:{one.tag}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(out)["schemaVersion"] == 2


def test_oci_unpack_refuses_a_blob_that_does_not_match_its_digest(tmp_path: Path) -> None:
    if shutil.which("cpio") is None:
        pytest.skip("needs cpio")
    app = _initrd(tmp_path, "app", {"/app/main.py": b"x"})
    image = write_layout([app], ["python3"], {}, tmp_path / "layout")
    layer = max((image.layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    layer.write_bytes(layer.read_bytes()[:-1] + b"!")
    with pytest.raises(RuntimeError, match="does not match its digest"):
        unpack(image.layout, image.tag, tmp_path / "rootfs")


def test_runtime_config_runs_the_entrypoint_on_the_given_port(tmp_path: Path) -> None:
    image = {
        "Entrypoint": ["python3", "-S"],
        "Cmd": ["/app/main.py"],
        "Env": ["PATH=/usr/bin", "PORT=8080"],
        "WorkingDir": "/",
    }
    config = runtime_config(image, 18123, tmp_path / "rootfs")
    process = config["process"]
    assert isinstance(process, dict)
    assert process["args"] == ["python3", "-S", "/app/main.py"]
    assert "PORT=18123" in process["env"] and "PORT=8080" not in process["env"]
    assert config["root"] == {"path": str(tmp_path / "rootfs"), "readonly": True}
    namespaces = config["linux"]["namespaces"]  # type: ignore[index]
    assert {"type": "network"} not in namespaces  # the host's network: no publishing in runc
