"""The ukedge hub: an OCI Distribution Spec v1.1 registry for unikernel (and container) images.

``create_app(settings)`` builds the ASGI app; :func:`serve`, :func:`add_user`,
:func:`create_robot_token` and :func:`run_gc` are what the ``ukedge hub`` commands call.
"""

import logging

from ukedge.hub._app import Hub, create_app
from ukedge.hub._auth import DEFAULT_USER_GRANTS, Grant, RobotToken, parse_grant
from ukedge.hub._errors import Code, DistributionError
from ukedge.hub._gc import GcReport
from ukedge.hub._manifests import SIGNATURE_TYPES
from ukedge.hub._serve import JsonFormatter, add_user, create_robot_token, run_gc, serve
from ukedge.hub._settings import ENV_PREFIX, HubSettings, load_settings

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_USER_GRANTS",
    "ENV_PREFIX",
    "SIGNATURE_TYPES",
    "Code",
    "DistributionError",
    "GcReport",
    "Grant",
    "Hub",
    "HubSettings",
    "JsonFormatter",
    "RobotToken",
    "add_user",
    "create_app",
    "create_robot_token",
    "load_settings",
    "parse_grant",
    "run_gc",
    "serve",
]
