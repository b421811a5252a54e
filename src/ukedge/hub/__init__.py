"""The ukedge hub: an OCI Distribution Spec v1.1 registry for unikernel (and container) images.

``create_app(settings)`` builds the ASGI app; :func:`serve`, :func:`add_user`,
:func:`create_robot_token`, :func:`run_gc` and :func:`run_fsck` are what the ``ukedge hub``
commands call.

Operating it:

* **Data**: ``<data_dir>/hub.db`` (SQLite, WAL: repositories, manifests, tags, links, uploads,
  users, robot tokens), ``<data_dir>/token-key.pem`` (Ed25519, 0600, made on first start) and the
  blob storage (filesystem driver: ``<data_dir>/storage``). One ``hub serve`` process per data
  directory; ``hub gc`` and the user/token commands may run beside it.
* **Auth** (``--auth auto|on|off``, default ``auto``): off while the hub has no users and no
  robot tokens, so a fresh local hub just works; on as soon as one exists (``hub user add``,
  ``hub token create``). With auth on, ``/v2/`` answers 401 with a Docker token challenge and
  ``/token`` issues 5-minute EdDSA tokens scoped to ``repository:NAME:pull,push,delete``;
  ``--anonymous-pull 'public/*'`` lets anyone pull matching repositories.
* **GC** (``hub gc``, or ``hub serve --gc-interval``) runs online, without a read-only window:
  blobs younger than ``gc_grace`` are never swept, and a database-level guard keeps a blob a
  racing manifest PUT references (see :mod:`ukedge.hub._gc`).
* **Consistency** (``hub fsck [--repair]``; ``hub serve`` runs the size-only check, repairing,
  before it listens): a blob is recorded only once its content is durably in place, and the check
  reconciles what a disk fault or an older hub left (see :mod:`ukedge.hub._fsck`).
* **Settings**: flags, then ``UKEDGE_HUB_*`` variables, then ``--config FILE`` (TOML).
"""

import logging

from ukedge.hub._app import Hub, create_app
from ukedge.hub._auth import DEFAULT_USER_GRANTS, Grant, RobotToken, parse_grant
from ukedge.hub._errors import Code, DistributionError
from ukedge.hub._fsck import FsckProblem, FsckReport
from ukedge.hub._gc import GcReport
from ukedge.hub._manifest_parse import SIGNATURE_TYPES
from ukedge.hub._serve import (
    add_user,
    create_robot_token,
    open_hub,
    run_fsck,
    run_gc,
    serve,
    server_config,
)
from ukedge.hub._settings import ENV_PREFIX, HubSettings, load_settings

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_USER_GRANTS",
    "ENV_PREFIX",
    "SIGNATURE_TYPES",
    "Code",
    "DistributionError",
    "FsckProblem",
    "FsckReport",
    "GcReport",
    "Grant",
    "Hub",
    "HubSettings",
    "RobotToken",
    "add_user",
    "create_app",
    "create_robot_token",
    "load_settings",
    "open_hub",
    "parse_grant",
    "run_fsck",
    "run_gc",
    "serve",
    "server_config",
]
