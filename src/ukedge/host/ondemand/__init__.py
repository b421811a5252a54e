"""On-demand instances: a published port the node listens on itself, booting the VM on the
first connection and stopping it when idle (scale to zero)."""

from ukedge.host.ondemand._controller import OnDemandController
from ukedge.host.ondemand._proxy import OnDemandProxy, ProxyState, Upstream

__all__ = ["OnDemandController", "OnDemandProxy", "ProxyState", "Upstream"]
