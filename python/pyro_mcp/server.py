"""``create_server``: the MCP server ``pyro mcp serve`` runs, started from Python."""

from __future__ import annotations

import subprocess
from typing import Mapping, Optional

from .errors import InvalidArgumentError

#: The MCP tool profiles, smallest first.
PROFILES = ("vm-run", "workspace-core", "workspace-full")


class McpServer:
    """An MCP server over stdio for one profile; :meth:`run` serves until the client
    closes the stream."""

    def __init__(self, profile: str, binary: str, env: Mapping[str, str]) -> None:
        if profile not in PROFILES:
            raise InvalidArgumentError(f"unknown MCP profile '{profile}'; expected one of: {', '.join(PROFILES)}")
        self.profile = profile
        self._binary = binary
        self._env = dict(env)

    def command(self) -> list[str]:
        """The command line that serves this server (for an MCP client's configuration)."""
        return [self._binary, "mcp", "serve", "--profile", self.profile]

    def run(self) -> int:
        """Serves MCP on this process's stdin/stdout until the client closes it; returns
        the server's exit status."""
        return subprocess.call(self.command(), env=self._env)


def create_server(profile: str = "workspace-full", *, binary: Optional[str] = None) -> McpServer:
    """The MCP server for ``profile`` (``vm-run``, ``workspace-core`` or
    ``workspace-full``); an unknown profile raises :class:`InvalidArgumentError`."""
    from ._binary import find_pyro
    from ._bridge import child_env

    return McpServer(profile, binary or find_pyro(), child_env(None, None))
