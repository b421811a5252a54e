"""The one exception tree of ukedge.

::

    UkedgeError
     ├── UsageError            bad input from a user: a flag, a file, a reference
     │    └── InputFileError   a file the user wrote is wrong (names file, field, problem)
     │         ├── UkfileError          a Ukfile that cannot be built
     │         └── DeploymentFileError  a deployment file (`ukedge deploy -f`) that is not a spec
     ├── ImageError            the local image store: unknown image, corrupt blob, bad digest
     │    ├── DigestMismatchError
     │    └── SignatureError   an image lacks a valid signature by a trusted key (or is refused)
     ├── KernelError           building or finding a kernel profile
     ├── BuildError            turning an application into image layers
     ├── MachineError          a hypervisor backend: start, stop, QMP
     │    ├── StateError       an operation the machine's current state does not allow
     │    └── MachineTimeoutError  a machine did not reach a state in time
     ├── InstanceError         the instance manager: unknown instance, name in use
     │    ├── NoSuchInstanceError  no instance has that name, id or id prefix
     │    ├── AdmissionError   the node has no room for the instance (memory, vCPUs)
     │    └── MigrationError   moving an instance to another node failed (``step`` says where)
     ├── AgentError            talking to a host agent: unreachable, token refused
     ├── ControllerError       the controller: unknown node or deployment, refused credential
     ├── RegistryError         talking to an OCI registry (client side)
     │    ├── AuthenticationError  credentials missing, wrong, or lacking a permission
     │    └── NotFoundError        no such repository, manifest, tag or blob
     ├── HubError              the hub server
     └── LinkError             a node talking to its controller: enrolment refused, bad answer
          └── LinkUnavailable  the controller cannot be reached now; retry later

Context travels in attributes (``digest``, ``machine_id``); the message says what to do next.
Errors from libraries (httpx, SQLAlchemy, qemu.qmp) are re-raised as these with ``from exc``.
"""

from __future__ import annotations

__all__ = [
    "AdmissionError",
    "AgentError",
    "AuthenticationError",
    "BuildError",
    "ControllerError",
    "DeploymentFileError",
    "DigestMismatchError",
    "HubError",
    "ImageError",
    "ImageInUseError",
    "InputFileError",
    "InstanceError",
    "KernelError",
    "LinkError",
    "LinkUnavailable",
    "MachineError",
    "MachineTimeoutError",
    "MigrationError",
    "NoSuchInstanceError",
    "NotFoundError",
    "RegistryError",
    "SignatureError",
    "StateError",
    "UkedgeError",
    "UkfileError",
    "UsageError",
]


class UkedgeError(Exception):
    """Root of every error ukedge raises on purpose."""

    exit_code: int = 1


class UsageError(UkedgeError):
    """Bad input from the user: a flag, a path, a reference."""

    exit_code = 2


class InputFileError(UsageError):
    """A file the user wrote does not say what it must; the message names the file, the field
    (``None``: the file as a whole) and the problem."""

    def __init__(self, path: str, field: str | None, problem: str) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        where = f"{path}: {field}" if field else path
        super().__init__(f"{where}: {problem}")


class UkfileError(InputFileError):
    """A Ukfile that cannot be built."""


class DeploymentFileError(InputFileError):
    """A deployment file (``ukedge deploy -f app.toml``) that is not a valid deployment spec."""


class ImageError(UkedgeError):
    """The local image store cannot do what was asked."""


class ImageInUseError(ImageError):
    """An image cannot be removed as asked: instances or other names depend on it."""


class DigestMismatchError(ImageError):
    """Content does not hash to the digest that names it; nothing was stored."""

    def __init__(self, expected: str, actual: str, what: str = "blob") -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"{what} digest mismatch: expected {expected}, got {actual}")


class SignatureError(ImageError):
    """An image's signatures do not satisfy what was asked: none, none by a trusted key, a bad
    one, or one made for another digest. ``image``, ``digest`` and ``reason`` say which."""

    def __init__(
        self, message: str, *, image: str = "", digest: str = "", reason: str = ""
    ) -> None:
        self.image = image
        self.digest = digest
        self.reason = reason or message
        super().__init__(message)


class KernelError(UkedgeError):
    """A kernel profile is unknown or its build failed."""


class BuildError(UkedgeError):
    """An application could not be turned into image layers."""


class MachineError(UkedgeError):
    """A hypervisor backend failed to start, stop or query a machine."""

    def __init__(self, message: str, machine_id: str | None = None) -> None:
        self.machine_id = machine_id
        super().__init__(message)


class StateError(MachineError):
    """The operation needs another state than the one the machine is in."""

    def __init__(self, current: str, required: str, machine_id: str | None = None) -> None:
        self.current = current
        self.required = required
        who = f"{machine_id} " if machine_id else ""
        super().__init__(f"machine {who}is {current}; this needs it {required}", machine_id)


class MachineTimeoutError(MachineError):
    """A machine did not end (or get ready) within the time asked; it is left as it was."""

    def __init__(self, message: str, machine_id: str | None = None, timeout: float = 0.0) -> None:
        self.timeout = timeout
        super().__init__(message, machine_id)


class InstanceError(UkedgeError):
    """The instance manager cannot find or change an instance."""


class NoSuchInstanceError(InstanceError):
    """No instance has the name, id or id prefix asked for."""


class AdmissionError(InstanceError):
    """The node cannot take the instance: its memory or vCPUs would exceed what is allocatable
    (times the over-commit ratio). Nothing was created."""


class MigrationError(InstanceError):
    """Moving an instance to another node failed or was refused; ``step`` names where
    (``connect``, ``freeze``, ``transfer``, ``restore``, ``commit``…). The source instance runs
    on unless the message says otherwise."""

    def __init__(self, message: str, step: str | None = None) -> None:
        self.step = step
        super().__init__(message)


class AgentError(UkedgeError):
    """A host agent could not be reached, refused the token, or answered out of protocol.

    ``status`` is the HTTP status when there was a response.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ControllerError(UkedgeError):
    """The controller refused or failed a request (server side: the API answers ``status``;
    client side: the status it answered, None when it could not be reached)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class RegistryError(UkedgeError):
    """An OCI registry refused or failed a request.

    ``code`` is the OCI error code (``BLOB_UNKNOWN``, ``DENIED``…) or ``None`` for a transport
    failure; ``status`` the HTTP status when there was a response.
    """

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        self.code = code
        self.status = status
        super().__init__(message)


class AuthenticationError(RegistryError):
    """The registry wants credentials we do not have, rejected them, or denied the action."""


class NotFoundError(RegistryError):
    """The registry has no such repository, manifest, tag or blob."""


class HubError(UkedgeError):
    """The hub server cannot do what was asked."""


class LinkError(UkedgeError):
    """A node's link to its controller failed: enrolment refused, credential revoked, an answer
    out of protocol. ``status`` is the HTTP status when there was a response."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class LinkUnavailable(LinkError):
    """The controller cannot be reached or answered 5xx: the node keeps running what it has
    and tries again later."""
