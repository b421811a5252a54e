"""A TCP relay between a client and a server: a tunnel that tests can cut (``kill``) and that
benchmarks can throttle (``rate_bytes_s``, a token bucket per direction)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class Relay:
    def __init__(self, target: tuple[str, int], *, rate_bytes_s: float | None = None) -> None:
        self.target = target
        self.rate = rate_bytes_s
        self.bytes = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._dead = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._dead.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.rate:
                # A link's queue, not megabytes of autotuned socket buffer in front of it.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # (a connection quiet for long, a return path, lives on)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        started = time.monotonic()
        moved = 0
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                dst.sendall(data)
                moved += len(data)
                self.bytes += len(data)
                if self.rate:
                    ahead = moved / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def kill(self) -> None:
        """Cut every connection and refuse new ones (the tunnel is gone)."""
        self._dead.set()
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
