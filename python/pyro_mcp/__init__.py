"""pyro: microVM sandboxes for coding agents, from Python.

``Pyro`` runs commands in fresh guests and keeps persistent workspaces; ``create_server``
serves the same operations to MCP clients. Both drive the ``pyro`` binary this wheel
installs, so Python, the CLI and MCP never disagree::

    from pyro_mcp import Pyro

    with Pyro() as pyro:
        print(pyro.run_in_vm("debian:12", "git --version")["stdout"])
"""

from __future__ import annotations

from importlib import metadata as _metadata

from .client import Pyro
from .errors import (
    ERROR_KINDS,
    BridgeError,
    BuildError,
    ConflictError,
    CorruptError,
    GuestError,
    HostIOError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    NotInstalledError,
    PyroError,
    PyroTimeoutError,
    RegistryError,
    UnavailableError,
    VmmError,
    WrongStateError,
)
from .server import PROFILES, McpServer, create_server

try:
    __version__ = _metadata.version("pyro-mcp")
except _metadata.PackageNotFoundError:
    __version__ = "0+unknown"

__all__ = [
    "ERROR_KINDS",
    "PROFILES",
    "BridgeError",
    "BuildError",
    "ConflictError",
    "CorruptError",
    "GuestError",
    "HostIOError",
    "InvalidArgumentError",
    "LimitExceededError",
    "McpServer",
    "NotFoundError",
    "NotInstalledError",
    "Pyro",
    "PyroError",
    "PyroTimeoutError",
    "RegistryError",
    "UnavailableError",
    "VmmError",
    "WrongStateError",
    "__version__",
    "create_server",
]
