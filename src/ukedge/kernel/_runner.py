"""Running one kernel build step: its output appended to the build log, its compile steps
counted for progress, and on failure an error naming the log and its last lines.

Each step runs in a session of its own, so a cancelled build (Ctrl-C) takes the whole make
tree down with it instead of leaving compilers running.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections import deque
from pathlib import Path
from typing import TextIO

from ukedge.errors import KernelError
from ukedge.types import ProgressCallback

__all__ = ["Runner"]

_STEP = re.compile(r"^\s+(CC|AS|LD|AR|OBJCOPY|GEN|HOSTCC)\s")
_TAIL_LINES = 25


class Runner:
    """Runs build steps with output appended to the log; a failure names the log and its tail."""

    def __init__(self, logf: TextIO, log_path: Path, env: dict[str, str], cwd: Path) -> None:
        self.logf = logf
        self.log_path = log_path
        self.env = env
        self.cwd = cwd

    def run(
        self,
        cmd: list[str],
        *,
        progress: ProgressCallback | None = None,
        total: int | None = None,
    ) -> int:
        """Run ``cmd``; returns how many compile steps it printed."""
        write = self.logf.write
        flush = self.logf.flush
        write(f"$ {' '.join(cmd)}\n")
        flush()
        tail: deque[str] = deque(maxlen=_TAIL_LINES)
        steps = 0
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=self.cwd,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,
            )
        except OSError as exc:
            raise KernelError(f"cannot run {cmd[0]}: {exc}; log: {self.log_path}") from exc
        with proc:
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    write(line)
                    tail.append(line.rstrip("\n"))
                    if _STEP.match(line):
                        steps += 1
                        if progress:
                            progress(steps, max(total or 0, steps + 1))
                rc = proc.wait()
            except BaseException:
                # Cancelled (Ctrl-C) or failed while reading: take the whole make tree down too.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                raise
        flush()
        if rc != 0:
            last = "\n".join(tail)
            raise KernelError(
                f"kernel build step `{' '.join(cmd)}` failed with exit code {rc}; "
                f"full log: {self.log_path}; last lines:\n{last}"
            )
        return steps
