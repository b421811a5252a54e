"""What a build directory resolves to before anything slow runs, and the image config it becomes.

:func:`resolve_plan` reads and checks the Ukfile and everything it names (kernel profile, sources
or binary, requirements, the files to pack, the default entrypoint), so a mistake fails in
milliseconds, before a kernel or runtime is built; :func:`image_config` turns the plan and the
built kernel into the image's config. Neither writes anything.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, cast

from ukedge.build._files import AppFile, select_files
from ukedge.build._pip import read_requirements_file
from ukedge.build._python import PYTHON_ENV
from ukedge.build._static import check_static_binary
from ukedge.build._ukfile import UKFILE_NAME, Ukfile, load_ukfile
from ukedge.errors import UkfileError
from ukedge.guest import source_date_epoch
from ukedge.image import (
    Architecture,
    BootConfig,
    ImageConfig,
    KernelInfo,
    Platform,
    host_platform,
    parse_reference,
)

__all__ = ["PYTHON_PACKAGES_DIR", "Plan", "image_config", "resolve_plan"]

#: Where a python app's requirements are installed in the guest (on ``PYTHONPATH``).
PYTHON_PACKAGES_DIR = "/usr/local/lib/python3.11/site-packages"


@dataclass
class Plan:
    """Everything checked before any slow step: a bad Ukfile fails in milliseconds."""

    uk: Ukfile
    context: Path
    ukfile: str
    tags: list[str]
    files: list[AppFile]
    entrypoint: list[str]
    env: dict[str, str]
    requirements: list[str]
    binary: Path | None = None  # static: a prebuilt binary to copy


def resolve_plan(context: Path, tags: Sequence[str], platform: Platform | None = None) -> Plan:
    """Check the Ukfile at ``context`` and what it names, for an image of ``platform``
    (default: this host's; a prebuilt static binary must be of its architecture)."""
    context = Path(context)
    ukfile_path = context / UKFILE_NAME if context.is_dir() else context
    context = ukfile_path.parent
    uk = load_ukfile(ukfile_path)
    shown = str(ukfile_path)
    refs = [str(parse_reference(t)) for t in tags] or [f"{uk.app.name}:latest"]
    from ukedge.kernel import profiles

    known = profiles()
    if uk.kernel.profile not in known:
        raise UkfileError(
            shown,
            "kernel.profile",
            f"unknown profile {uk.kernel.profile!r}; known profiles: {', '.join(known)}",
        )
    app_dir = PurePosixPath(uk.files.dest)

    skip: set[str] = set()
    binary = None
    requirements: list[str] = []
    env: dict[str, str] = {}
    if uk.app.runtime == "static":
        assert uk.static is not None
        skip.update(uk.static.sources)
        if uk.static.binary:
            binary = context / uk.static.binary
            check_static_binary(
                binary,
                ukfile=shown,
                field="static.binary",
                shown=uk.static.binary,
                platform=platform,
            )
            skip.add(uk.static.binary)
            default_entry = [str(app_dir / PurePosixPath(uk.static.binary).name)]
        else:
            for index, source in enumerate(uk.static.sources):
                if not (context / source).is_file():
                    raise UkfileError(
                        shown, f"static.sources[{index}]", f"{source} does not exist in {context}"
                    )
            default_entry = [str(app_dir / uk.app.name)]
    else:
        section = uk.python
        env.update(PYTHON_ENV)
        if section is not None and section.requirements is not None:
            requirements = list(section.requirements)
        else:
            name = (section.requirements_file if section else None) or "requirements.txt"
            path = context / name
            explicit = section is not None and section.requirements_file is not None
            if explicit or path.is_file():
                requirements = read_requirements_file(
                    path, ukfile=shown, field="python.requirements_file"
                )
        if requirements:
            env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{PYTHON_PACKAGES_DIR}"
        default_entry = ["python3", "-u", str(app_dir / "main.py")]
    user_path = uk.env.get("PYTHONPATH")
    env.update(uk.env)
    if user_path and uk.app.runtime == "python":
        # the app's directories first, but keep the runtime's: the loose stdlib and packages
        env["PYTHONPATH"] = f"{user_path}:{PYTHON_ENV['PYTHONPATH']}"
        if requirements:
            env["PYTHONPATH"] += f":{PYTHON_PACKAGES_DIR}"

    files = select_files(context, uk.files, ukfile=shown, skip=frozenset(skip))
    if uk.app.entrypoint is not None:
        entrypoint = list(uk.app.entrypoint)
    else:
        if uk.app.runtime == "python" and not any(f.dest == default_entry[-1] for f in files):
            raise UkfileError(
                shown,
                "app.entrypoint",
                f"not given, and there is no main.py to run by default in {context} "
                '(set entrypoint = ["python3", "-u", "/app/yourapp.py"])',
            )
        entrypoint = default_entry
    return Plan(uk, context, shown, refs, files, entrypoint, env, requirements, binary)


def _created() -> str | None:
    if "SOURCE_DATE_EPOCH" not in os.environ:
        return None
    stamp = datetime.datetime.fromtimestamp(source_date_epoch(), tz=datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


#: How each architecture's kernel layer boots (BootConfig.protocol).
_BOOT_PROTOCOLS: dict[str, Literal["linux-pvh", "linux-arm64-image"]] = {
    "amd64": "linux-pvh",
    "arm64": "linux-arm64-image",
}


def image_config(
    plan: Plan,
    profile: str,
    version: str,
    cmdline: str,
    memory_mib: int,
    platform: Platform | None = None,
) -> ImageConfig:
    uk = plan.uk
    target = platform or host_platform()
    return ImageConfig(
        # Platform.machine (checked by the builder) admits only the supported architectures.
        architecture=cast(Architecture, target.architecture),
        variant=target.variant,
        created=_created(),
        name=uk.app.name,
        runtime=uk.app.runtime,
        entrypoint=plan.entrypoint,
        args=list(uk.app.args),
        env=plan.env,
        workdir=uk.app.workdir,
        memory_mib=memory_mib,
        vcpus=uk.resources.vcpus,
        ports=list(uk.ports),
        healthcheck=uk.healthcheck,
        kernel=KernelInfo(profile=profile, version=version),
        boot=BootConfig(protocol=_BOOT_PROTOCOLS[target.architecture], cmdline=cmdline),
        labels=dict(uk.labels),
        snapshot=None if uk.app.snapshot == "ready" else uk.app.snapshot,
        hostname=uk.app.hostname,
    )
