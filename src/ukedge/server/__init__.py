"""The plumbing every ukedge server shares: request metrics and the access log (one ASGI
middleware), ``/healthz`` and ``/metrics``, and the uvicorn runner with its listeners.

The hub, the host agent and the controller each build an ASGI app with a factory and hand it
here, so they count, log and run the same way. Imported only by servers: the CLI's local
commands never pay for it.
"""

from ukedge.server._limits import BodyLimit
from ukedge.server._metrics import HttpMetrics, MetricsMiddleware, matched_route
from ukedge.server._operations import Health, add_operations
from ukedge.server._run import run, tcp_listener, uvicorn_config
from ukedge.server._tls import make_self_signed

__all__ = [
    "BodyLimit",
    "Health",
    "HttpMetrics",
    "MetricsMiddleware",
    "add_operations",
    "make_self_signed",
    "matched_route",
    "run",
    "tcp_listener",
    "uvicorn_config",
]
