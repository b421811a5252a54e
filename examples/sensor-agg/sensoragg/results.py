"""Where closed-window summaries go: the ukedge results device in a guest, else a file or stdout.

The device is opened without ``O_CREAT``: on a plain host (the benchmark's baseline) it does not
exist and must not be created as an ordinary file under /dev.
"""

import os
import sys

from sensoragg.lean import dumps

__all__ = ["RESULTS_DEVICE", "ResultsSink"]

RESULTS_DEVICE = "/dev/ukedge-results"


class ResultsSink:
    """Writes one JSON document per line, each with a single ``write`` so lines never interleave."""

    def __init__(self, device: str = RESULTS_DEVICE, fallback: str | None = None) -> None:
        self.fd: int | None = None
        self.where = "stdout"
        try:
            self.fd = os.open(device, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            self.where = device
        except OSError:
            if fallback:
                self.fd = os.open(fallback, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                self.where = fallback

    def write(self, doc: object) -> None:
        line = (dumps(doc) + "\n").encode()
        if self.fd is None:
            sys.stdout.write(line.decode())
            sys.stdout.flush()
            return
        view = memoryview(line)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
