"""The one exception tree of ukedge.

::

    UkedgeError
     ├── UsageError            bad input from a user: a flag, a file, a reference
     │    └── UkfileError      a Ukfile that cannot be built (names file, field, problem)
     ├── ImageError            the local image store: unknown image, corrupt blob, bad digest
     │    └── DigestMismatchError
     ├── KernelError           building or finding a kernel profile
     ├── BuildError            turning an application into image layers
     ├── MachineError          a hypervisor backend: start, stop, QMP
     │    └── StateError       an operation the machine's current state does not allow
     ├── InstanceError         the instance manager: unknown instance, name in use
     ├── RegistryError         talking to an OCI registry (client side)
     └── HubError              the hub server

Context travels in attributes (``digest``, ``machine_id``); the message says what to do next.
Errors from libraries (httpx, SQLAlchemy, qemu.qmp) are re-raised as these with ``from exc``.
"""

from __future__ import annotations

__all__ = [
    "BuildError",
    "DigestMismatchError",
    "HubError",
    "ImageError",
    "InstanceError",
    "KernelError",
    "MachineError",
    "RegistryError",
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


class UkfileError(UsageError):
    """A Ukfile that cannot be built; the message names the file, the field and the problem."""

    def __init__(self, path: str, field: str | None, problem: str) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        where = f"{path}: {field}" if field else path
        super().__init__(f"{where}: {problem}")


class ImageError(UkedgeError):
    """The local image store cannot do what was asked."""


class DigestMismatchError(ImageError):
    """Content does not hash to the digest that names it; nothing was stored."""

    def __init__(self, expected: str, actual: str, what: str = "blob") -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"{what} digest mismatch: expected {expected}, got {actual}")


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


class InstanceError(UkedgeError):
    """The instance manager cannot find or change an instance."""


class RegistryError(UkedgeError):
    """An OCI registry refused or failed a request."""


class HubError(UkedgeError):
    """The hub server cannot do what was asked."""
