"""Typed exceptions raised by the SDK, one per pyro error kind.

Every failure pyro reports carries a stable ``error_kind`` (the same list the CLI prints
with ``--json`` and MCP puts in ``isError`` results); :func:`error_for` picks the class.
Bad input and unknown names also subclass :class:`ValueError`, deadlines
:class:`TimeoutError`, and the rest :class:`RuntimeError`, as the original SDK raised.
"""

from __future__ import annotations

from typing import Dict, Type


class PyroError(Exception):
    """A failure pyro reported: ``message`` is the CLI's one-line message, ``kind`` its
    stable error kind (``not_found``, ``invalid_argument``, ``timeout``, ...)."""

    kind: str = "error"

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind


class InvalidArgumentError(PyroError, ValueError):
    """An argument was malformed or out of range (``invalid_argument``)."""

    kind = "invalid_argument"


class NotFoundError(PyroError, ValueError):
    """The workspace, VM, snapshot, service, shell, path or environment does not exist."""

    kind = "not_found"


class ConflictError(PyroError, RuntimeError):
    """The name is taken or the object is busy (``conflict``)."""

    kind = "conflict"


class WrongStateError(PyroError, RuntimeError):
    """The object is not in the state the operation needs, e.g. exec in a stopped workspace."""

    kind = "wrong_state"


class UnavailableError(PyroError, RuntimeError):
    """This host or guest cannot do it (no backend, a capability the guest lacks)."""

    kind = "unavailable"


class NotInstalledError(PyroError, RuntimeError):
    """The environment is not installed and could not be installed."""

    kind = "not_installed"


class CorruptError(PyroError, RuntimeError):
    """Stored state or an image failed its checks."""

    kind = "corrupt"


class LimitExceededError(PyroError, RuntimeError):
    """A size, count or capacity limit was reached."""

    kind = "limit_exceeded"


class PyroTimeoutError(PyroError, TimeoutError):
    """A deadline passed (``timeout``)."""

    kind = "timeout"


class GuestError(PyroError, RuntimeError):
    """The guest or its agent failed or misbehaved."""

    kind = "guest"


class VmmError(PyroError, RuntimeError):
    """The virtual machine monitor failed or died."""

    kind = "vmm"


class BuildError(PyroError, RuntimeError):
    """Building an image or kernel failed."""

    kind = "build"


class RegistryError(PyroError, RuntimeError):
    """The image registry refused or failed."""

    kind = "registry"


class HostIOError(PyroError, RuntimeError):
    """A host file-system or I/O failure (``io``)."""

    kind = "io"


class BridgeError(PyroError, RuntimeError):
    """The SDK lost its ``pyro`` child process, or it spoke out of turn."""

    kind = "bridge"


_BY_KIND: Dict[str, Type[PyroError]] = {
    cls.kind: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        ConflictError,
        WrongStateError,
        UnavailableError,
        NotInstalledError,
        CorruptError,
        LimitExceededError,
        PyroTimeoutError,
        GuestError,
        VmmError,
        BuildError,
        RegistryError,
        HostIOError,
    )
}

#: Every error kind pyro reports, in the order of the README's table.
ERROR_KINDS = tuple(_BY_KIND)


def error_for(message: str, kind: str) -> PyroError:
    """The exception for a failure of ``kind`` (an unknown kind gives :class:`PyroError`)."""
    cls = _BY_KIND.get(kind)
    return cls(message) if cls is not None else PyroError(message, kind)
