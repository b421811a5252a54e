"""Instance-manager behaviour that needs no VM: records only."""

from __future__ import annotations

import time
from pathlib import Path

from ukedge import vmm
from ukedge.host import Instance, InstanceManager, InstanceState, UnpackedLayers
from ukedge.image import ImageStore


def test_before_remove_hooks_see_the_instance_while_its_files_exist(tmp_path: Path) -> None:
    manager = InstanceManager(
        tmp_path / "instances",
        ImageStore(tmp_path / "store"),
        vmm.create("qemu"),
        UnpackedLayers(tmp_path / "unpacked"),
    )
    workdir = tmp_path / "instances" / "abc"
    (workdir / "vm").mkdir(parents=True)
    (workdir / "vm" / "results.jsonl").write_text('{"last": true}\n')
    manager.records.add(
        Instance(
            id="abc",
            name="done",
            image="app:1",
            image_digest="sha256:" + "0" * 64,
            state=InstanceState.EXITED,
            exit_code=0,
            created_at=time.time(),
            memory_mib=64,
            vcpus=1,
            workdir=str(workdir),
        )
    )
    seen: list[str] = []
    manager.before_remove.append(lambda i: seen.append(manager.results_path(i).read_text().strip()))
    manager.remove("done")
    assert seen == ['{"last": true}']
    assert not workdir.exists()
    assert manager.list(all_instances=True) == []
