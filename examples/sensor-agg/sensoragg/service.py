"""The sensor-agg service: HTTP routes over an :class:`Aggregator`, and the loop that closes
windows on time and writes their summaries to the results sink."""

import _signal
import os
import time

from sensoragg.aggregate import Aggregator, ReadingError, parse_readings
from sensoragg.http import HTTPServer, Request, Response
from sensoragg.lean import dumps, loads
from sensoragg.results import ResultsSink

__all__ = ["Service", "main"]


def _json(status: int, doc: object) -> Response:
    return Response(status, dumps(doc).encode())


class Service:
    def __init__(
        self, aggregator: Aggregator, sink: ResultsSink, clock: "Callable[[], float]" = time.time
    ) -> None:
        self.agg = aggregator
        self.sink = sink
        self.clock = clock

    def handle(self, request: Request) -> Response:
        route = (request.path.rstrip("/") or "/", request.method)
        path = route[0]
        if path == "/readings":
            if request.method != "POST":
                return Response(405, b'{"error": "use POST"}', headers={"Allow": "POST"})
            return self.post_readings(request.body)
        if path in ("/stats", "/healthz"):
            if request.method not in ("GET", "HEAD"):
                return Response(405, b'{"error": "use GET"}', headers={"Allow": "GET, HEAD"})
            if path == "/healthz":
                return _json(200, {"status": "ok", "accepted": self.agg.accepted})
            return _json(200, self.agg.stats(self.clock()))
        return _json(404, {"error": f"no route {request.path}; try POST /readings, GET /stats"})

    def post_readings(self, body: bytes) -> Response:
        now = self.clock()
        self.flush(now)  # a reading for a window that just ended must not reopen it
        try:
            doc = loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _json(400, {"error": f"body is not valid JSON: {exc}"})
        try:
            readings = parse_readings(doc, now)
            accepted = self.agg.add(readings, now)
        except ReadingError as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, {"accepted": accepted})

    def flush(self, now: float, *, everything: bool = False) -> None:
        for summary in self.agg.close_due(now, everything=everything):
            self.sink.write(summary)


def main() -> int:
    window = float(os.environ.get("WINDOW_SECONDS", "10"))
    port = int(os.environ.get("PORT", "8080"))
    host = os.environ.get("HOST", "0.0.0.0")
    sink = ResultsSink(fallback=os.environ.get("RESULTS_FILE") or None)
    service = Service(Aggregator(window), sink)
    server = HTTPServer(host, port, service.handle)

    def stop(signum: int, frame: object) -> None:
        server.stop()

    _signal.signal(_signal.SIGTERM, stop)  # _signal: the signal module would import enum
    _signal.signal(_signal.SIGINT, stop)
    print(f"sensor-agg listening on {host}:{server.port} (window {window:g}s, "
          f"results to {sink.where})", flush=True)
    try:
        while server.running:
            due = service.agg.next_close()
            timeout = None if due is None else max(0.0, due - service.clock())
            server.poll(min(timeout, 1.0) if timeout is not None else 1.0)
            service.flush(service.clock())
    finally:
        service.flush(service.clock(), everything=True)
        server.close()
        sink.close()
    return 0
