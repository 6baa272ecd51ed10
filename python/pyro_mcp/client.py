"""``Pyro``: every SDK method, each one call of the pyro tool of the same operation.

Results are plain dicts shaped like the CLI's ``--json`` results. Failures raise the
:class:`~pyro_mcp.errors.PyroError` subclass of their error kind, with the CLI's message.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Type, Union

from ._binary import find_pyro
from ._bridge import Bridge, OutputCallback, child_env
from .errors import InvalidArgumentError
from .server import McpServer

PathLike = Union[str, "os.PathLike[str]"]
#: A workspace secret: ``{"name", "value"}`` or ``{"name", "file_path"}``.
Secret = Mapping[str, Any]
#: Secrets to map into one call's environment: secret names (each as a variable of the
#: same name) or a mapping of secret name to variable name.
SecretEnv = Union[Mapping[str, str], Sequence[str]]
#: A published port: ``{"guest_port": N}`` or ``{"guest_port": N, "host_port": M}``.
PublishedPort = Mapping[str, int]

_READINESS_FIELDS = {"file": "path", "tcp": "address", "http": "url", "command": "command"}


def _path(path: PathLike) -> str:
    # Absolute, so a later chdir of this process cannot change what the child sees.
    return os.path.abspath(os.fspath(path))


def _secret_env(secret_env: Optional[SecretEnv]) -> Optional[Dict[str, str]]:
    if secret_env is None:
        return None
    if isinstance(secret_env, Mapping):
        return {str(name): str(variable) for name, variable in secret_env.items()}
    return {str(name): str(name) for name in secret_env}


def _secrets(secrets: Union[Mapping[str, str], Iterable[Secret], None]) -> Optional[List[Dict[str, Any]]]:
    if secrets is None:
        return None
    if isinstance(secrets, Mapping):
        return [{"name": name, "value": value} for name, value in secrets.items()]
    listed = []
    for secret in secrets:
        entry = dict(secret)
        if entry.get("file_path") is not None:
            entry["file_path"] = _path(entry["file_path"])
        listed.append(entry)
    return listed


def _readiness(readiness: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The ``ready_*`` argument a readiness dict (``{"type": "file", "path": ...}``,
    ``tcp``/``address``, ``http``/``url``, ``command``/``command``) stands for."""
    if readiness is None:
        return {}
    kind = str(readiness.get("type", "")).strip().lower()
    field = _READINESS_FIELDS.get(kind)
    if field is None:
        raise InvalidArgumentError("readiness.type must be one of: file, tcp, http, command")
    value = readiness.get(field)
    if value is None or str(value).strip() == "":
        raise InvalidArgumentError(f"readiness.{field} is required for {kind} readiness")
    return {f"ready_{kind}": str(value)}


def _given(**arguments: Any) -> Dict[str, Any]:
    """The arguments that were given (``None`` leaves the tool's default)."""
    return {name: value for name, value in arguments.items() if value is not None}


class Pyro:
    """pyro from Python: one long-lived ``pyro`` child process serves every call.

    ``cache_dir`` and ``state_dir`` choose pyro's directories (as ``PYRO_CACHE_DIR`` and
    ``PYRO_STATE_DIR`` would); ``binary`` names a ``pyro`` other than the installed one.
    Use it as a context manager, or call :meth:`close`, to end the child early; it also
    ends when this process does.
    """

    def __init__(
        self,
        *,
        cache_dir: Optional[PathLike] = None,
        state_dir: Optional[PathLike] = None,
        binary: Optional[str] = None,
    ) -> None:
        self._binary = binary or find_pyro()
        self._env = child_env(cache_dir, state_dir)
        self._bridge = Bridge(self._binary, self._env)

    def __enter__(self) -> "Pyro":
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], value: Optional[BaseException], traceback: Optional[TracebackType]) -> None:
        self.close()

    def close(self) -> None:
        """Ends the ``pyro`` child; a later call starts a new one."""
        self._bridge.close()

    def _call(self, tool: str, on_stdout: Optional[OutputCallback] = None, on_stderr: Optional[OutputCallback] = None, **arguments: Any) -> Dict[str, Any]:
        return self._bridge.call(tool, arguments, on_stdout, on_stderr)

    # -- MCP ---------------------------------------------------------------------------

    def create_server(self, profile: str = "workspace-full") -> McpServer:
        """The MCP server ``pyro mcp serve --profile PROFILE`` runs, over this instance's
        directories; an unknown profile raises :class:`InvalidArgumentError`."""
        return McpServer(profile, self._binary, self._env)

    # -- environments ------------------------------------------------------------------

    def list_environments(self) -> Dict[str, Any]:
        """The catalog: ``{"catalog_version", "environments": [...]}`` with install state."""
        return self._call("vm_list_environments")

    def pull_environment(self, environment: str) -> Dict[str, Any]:
        """Installs one environment (from the registry, else built locally)."""
        return self._call("environment_pull", environment=environment)

    def inspect_environment(self, environment: str) -> Dict[str, Any]:
        """Describes one environment and whether it is installed."""
        return self._call("environment_inspect", environment=environment)

    def prune_environments(self) -> Dict[str, Any]:
        """Deletes cached environments that are no longer usable."""
        return self._call("environment_prune")

    # -- ephemeral VMs -----------------------------------------------------------------

    def run_in_vm(
        self,
        environment: str,
        command: str,
        *,
        vcpu_count: int = 1,
        mem_mib: int = 1024,
        timeout_seconds: int = 30,
        ttl_seconds: int = 600,
        network: bool = False,
        allow_host_compat: bool = False,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> Dict[str, Any]:
        """Runs ``command`` in a fresh VM, then deletes it. ``on_stdout``/``on_stderr``
        receive output while it runs; the result holds all of it too."""
        return self._call(
            "vm_run",
            on_stdout,
            on_stderr,
            environment=environment,
            command=command,
            vcpu_count=vcpu_count,
            mem_mib=mem_mib,
            timeout_seconds=timeout_seconds,
            ttl_seconds=ttl_seconds,
            network=network,
            allow_host_compat=allow_host_compat,
        )

    def create_vm(
        self,
        environment: str,
        *,
        vcpu_count: int = 1,
        mem_mib: int = 1024,
        ttl_seconds: int = 600,
        network: bool = False,
        allow_host_compat: bool = False,
    ) -> Dict[str, Any]:
        """Creates an ephemeral VM (not started); it lives on disk until deleted or reaped."""
        return self._call(
            "vm_create",
            environment=environment,
            vcpu_count=vcpu_count,
            mem_mib=mem_mib,
            ttl_seconds=ttl_seconds,
            network=network,
            allow_host_compat=allow_host_compat,
        )

    def start_vm(self, vm_id: str) -> Dict[str, Any]:
        """Boots a created VM."""
        return self._call("vm_start", vm_id=vm_id)

    def exec_vm(
        self,
        vm_id: str,
        *,
        command: str,
        timeout_seconds: int = 30,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> Dict[str, Any]:
        """Runs one command in a started VM, then deletes the VM."""
        return self._call("vm_exec", on_stdout, on_stderr, vm_id=vm_id, command=command, timeout_seconds=timeout_seconds)

    def stop_vm(self, vm_id: str) -> Dict[str, Any]:
        """Stops a VM."""
        return self._call("vm_stop", vm_id=vm_id)

    def delete_vm(self, vm_id: str) -> Dict[str, Any]:
        """Deletes a VM."""
        return self._call("vm_delete", vm_id=vm_id)

    def status_vm(self, vm_id: str) -> Dict[str, Any]:
        """One VM's state."""
        return self._call("vm_status", vm_id=vm_id)

    def network_info_vm(self, vm_id: str) -> Dict[str, Any]:
        """One VM's network configuration."""
        return self._call("vm_network_info", vm_id=vm_id)

    def reap_expired(self) -> Dict[str, Any]:
        """Deletes every VM whose TTL has passed."""
        return self._call("vm_reap_expired")

    # -- workspaces --------------------------------------------------------------------

    def create_workspace(
        self,
        environment: str,
        *,
        vcpu_count: int = 1,
        mem_mib: int = 1024,
        ttl_seconds: Optional[int] = None,
        network_policy: str = "off",
        allow_host_compat: bool = False,
        seed_path: Optional[PathLike] = None,
        name: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        secrets: Union[Mapping[str, str], Iterable[Secret], None] = None,
        allow_hosts: Optional[Iterable[str]] = None,
    ) -> Dict[str, Any]:
        """Creates and starts a persistent workspace, seeding ``/workspace`` from a host
        directory or ``.tar``/``.tar.gz``/``.tgz`` archive when ``seed_path`` is given.
        ``secrets`` are guest-only: a mapping of name to value, or a list of
        ``{"name", "value"}`` / ``{"name", "file_path"}``. ``allow_hosts`` narrows a
        networked workspace's egress to these host names and CIDRs."""
        return self._call(
            "workspace_create",
            environment=environment,
            vcpu_count=vcpu_count,
            mem_mib=mem_mib,
            network_policy=network_policy,
            allow_host_compat=allow_host_compat,
            **_given(
                ttl_seconds=ttl_seconds,
                seed_path=None if seed_path is None else _path(seed_path),
                name=name,
                labels=None if labels is None else dict(labels),
                secrets=_secrets(secrets),
                allow_hosts=None if allow_hosts is None else [str(h) for h in allow_hosts],
            ),
        )

    def list_workspaces(self) -> Dict[str, Any]:
        """Workspace summaries, most recently active first."""
        return self._call("workspace_list")

    def status_workspace(self, workspace_id: str) -> Dict[str, Any]:
        """One workspace's state and latest command."""
        return self._call("workspace_status", workspace_id=workspace_id)

    def network_log_workspace(self, workspace_id: str) -> Dict[str, Any]:
        """A workspace's guest network log: flow counts and the latest refused flows
        (time, destination, DNS name, rule)."""
        return self._call("workspace_network_log", workspace_id=workspace_id)

    def update_workspace(
        self,
        workspace_id: str,
        *,
        name: Optional[str] = None,
        clear_name: bool = False,
        labels: Optional[Mapping[str, str]] = None,
        clear_labels: Optional[Sequence[str]] = None,
    ) -> Dict[str, Any]:
        """Changes only discovery metadata: the name and labels."""
        return self._call(
            "workspace_update",
            workspace_id=workspace_id,
            clear_name=clear_name,
            **_given(name=name, labels=None if labels is None else dict(labels), clear_labels=None if clear_labels is None else list(clear_labels)),
        )

    def stop_workspace(self, workspace_id: str) -> Dict[str, Any]:
        """Stops a workspace, keeping ``/workspace``, snapshots and history."""
        return self._call("workspace_stop", workspace_id=workspace_id)

    def start_workspace(self, workspace_id: str) -> Dict[str, Any]:
        """Starts a stopped workspace without resetting ``/workspace``."""
        return self._call("workspace_start", workspace_id=workspace_id)

    def delete_workspace(self, workspace_id: str) -> Dict[str, Any]:
        """Deletes a workspace and everything it holds."""
        return self._call("workspace_delete", workspace_id=workspace_id)

    def exec_workspace(
        self,
        workspace_id: str,
        *,
        command: str,
        timeout_seconds: int = 30,
        secret_env: Optional[SecretEnv] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> Dict[str, Any]:
        """Runs one command in ``/workspace`` and records it in the history.
        ``secret_env`` maps workspace secrets into this command's environment only."""
        return self._call(
            "workspace_exec",
            on_stdout,
            on_stderr,
            workspace_id=workspace_id,
            command=command,
            timeout_seconds=timeout_seconds,
            **_given(secret_env=_secret_env(secret_env)),
        )

    def logs_workspace(self, workspace_id: str) -> Dict[str, Any]:
        """The command history since the last reset."""
        return self._call("workspace_logs", workspace_id=workspace_id)

    def push_workspace_sync(self, workspace_id: str, source_path: PathLike, *, dest: str = "/workspace") -> Dict[str, Any]:
        """Imports a host directory or archive into a started workspace."""
        return self._call("workspace_sync_push", workspace_id=workspace_id, source_path=_path(source_path), dest=dest)

    def list_workspace_files(self, workspace_id: str, path: str = "/workspace", recursive: bool = False) -> Dict[str, Any]:
        """Lists entries under a live ``/workspace`` path."""
        return self._call("workspace_file_list", workspace_id=workspace_id, path=path, recursive=recursive)

    def read_workspace_file(self, workspace_id: str, path: str, *, max_bytes: int = 65536) -> Dict[str, Any]:
        """Reads one regular text file from a live workspace."""
        return self._call("workspace_file_read", workspace_id=workspace_id, path=path, max_bytes=max_bytes)

    def write_workspace_file(self, workspace_id: str, path: str, *, text: str) -> Dict[str, Any]:
        """Creates or replaces one text file under ``/workspace``."""
        return self._call("workspace_file_write", workspace_id=workspace_id, path=path, text=text)

    def apply_workspace_patch(self, workspace_id: str, *, patch: str) -> Dict[str, Any]:
        """Applies a unified text patch (add, modify, delete) under ``/workspace``."""
        return self._call("workspace_patch_apply", workspace_id=workspace_id, patch=patch)

    def export_workspace(self, workspace_id: str, path: str, *, output_path: PathLike) -> Dict[str, Any]:
        """Copies one file or directory from ``/workspace`` to a new host path."""
        return self._call("workspace_export", workspace_id=workspace_id, path=path, output_path=_path(output_path))

    def diff_workspace(self, workspace_id: str) -> Dict[str, Any]:
        """Compares ``/workspace`` with the create-time baseline."""
        return self._call("workspace_diff", workspace_id=workspace_id)

    def export_workspace_disk(self, workspace_id: str, *, output_path: PathLike) -> Dict[str, Any]:
        """Copies a stopped workspace's raw ext4 disk to a host path."""
        return self._call("workspace_disk_export", workspace_id=workspace_id, output_path=_path(output_path))

    def list_workspace_disk(self, workspace_id: str, path: str = "/workspace", recursive: bool = False) -> Dict[str, Any]:
        """Lists a stopped workspace's disk offline, without booting it."""
        return self._call("workspace_disk_list", workspace_id=workspace_id, path=path, recursive=recursive)

    def read_workspace_disk(self, workspace_id: str, path: str, *, max_bytes: int = 65536) -> Dict[str, Any]:
        """Reads one regular file from a stopped workspace's disk offline."""
        return self._call("workspace_disk_read", workspace_id=workspace_id, path=path, max_bytes=max_bytes)

    # -- snapshots and reset -----------------------------------------------------------

    def create_snapshot(self, workspace_id: str, snapshot_name: str) -> Dict[str, Any]:
        """Captures ``/workspace`` as a named snapshot."""
        return self._call("snapshot_create", workspace_id=workspace_id, snapshot_name=snapshot_name)

    def list_snapshots(self, workspace_id: str) -> Dict[str, Any]:
        """The baseline and the named snapshots."""
        return self._call("snapshot_list", workspace_id=workspace_id)

    def delete_snapshot(self, workspace_id: str, snapshot_name: str) -> Dict[str, Any]:
        """Deletes one named snapshot (never the baseline)."""
        return self._call("snapshot_delete", workspace_id=workspace_id, snapshot_name=snapshot_name)

    def reset_workspace(self, workspace_id: str, *, snapshot: str = "baseline") -> Dict[str, Any]:
        """Recreates the sandbox from the baseline or a named snapshot, clearing command,
        shell and service history."""
        return self._call("workspace_reset", workspace_id=workspace_id, snapshot=snapshot)

    # -- services ----------------------------------------------------------------------

    def start_service(
        self,
        workspace_id: str,
        service_name: str,
        *,
        command: str,
        cwd: str = "/workspace",
        readiness: Optional[Mapping[str, Any]] = None,
        ready_timeout_seconds: int = 30,
        ready_interval_ms: int = 500,
        secret_env: Optional[SecretEnv] = None,
        published_ports: Optional[Sequence[PublishedPort]] = None,
    ) -> Dict[str, Any]:
        """Starts a named long-running process and waits for its readiness probe:
        ``{"type": "file", "path"}``, ``{"type": "tcp", "address"}``,
        ``{"type": "http", "url"}`` or ``{"type": "command", "command"}``."""
        return self._call(
            "service_start",
            workspace_id=workspace_id,
            service_name=service_name,
            command=command,
            cwd=cwd,
            ready_timeout_seconds=ready_timeout_seconds,
            ready_interval_ms=ready_interval_ms,
            **_readiness(readiness),
            **_given(secret_env=_secret_env(secret_env), published_ports=None if published_ports is None else [dict(p) for p in published_ports]),
        )

    def list_services(self, workspace_id: str) -> Dict[str, Any]:
        """The workspace's services and their states."""
        return self._call("service_list", workspace_id=workspace_id)

    def status_service(self, workspace_id: str, service_name: str) -> Dict[str, Any]:
        """One service's state."""
        return self._call("service_status", workspace_id=workspace_id, service_name=service_name)

    def logs_service(self, workspace_id: str, service_name: str, *, tail_lines: int = 200, all: bool = False) -> Dict[str, Any]:
        """A service's output: the last ``tail_lines`` lines, or ``all`` of it."""
        return self._call("service_logs", workspace_id=workspace_id, service_name=service_name, tail_lines=tail_lines, all=all)

    def stop_service(self, workspace_id: str, service_name: str) -> Dict[str, Any]:
        """Stops one service (SIGTERM, then SIGKILL)."""
        return self._call("service_stop", workspace_id=workspace_id, service_name=service_name)

    # -- shells ------------------------------------------------------------------------

    def open_shell(
        self, workspace_id: str, *, cwd: str = "/workspace", cols: int = 120, rows: int = 30, secret_env: Optional[SecretEnv] = None
    ) -> Dict[str, Any]:
        """Opens a persistent PTY shell in a started workspace."""
        return self._call("shell_open", workspace_id=workspace_id, cwd=cwd, cols=cols, rows=rows, **_given(secret_env=_secret_env(secret_env)))

    def read_shell(
        self,
        workspace_id: str,
        shell_id: str,
        *,
        cursor: int = 0,
        max_chars: int = 65536,
        plain: bool = False,
        wait_for_idle_ms: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Reads shell output from ``cursor``; ``plain`` renders it as text a chat can
        show, ``wait_for_idle_ms`` first waits for the output to go quiet."""
        return self._call(
            "shell_read",
            workspace_id=workspace_id,
            shell_id=shell_id,
            cursor=cursor,
            max_chars=max_chars,
            plain=plain,
            **_given(wait_for_idle_ms=wait_for_idle_ms),
        )

    def write_shell(self, workspace_id: str, shell_id: str, *, input: str, append_newline: bool = True) -> Dict[str, Any]:
        """Types ``input`` into the shell (with a newline unless told otherwise)."""
        return self._call("shell_write", workspace_id=workspace_id, shell_id=shell_id, input=input, append_newline=append_newline)

    def signal_shell(self, workspace_id: str, shell_id: str, *, signal_name: str = "INT") -> Dict[str, Any]:
        """Sends a signal (``INT``, ``TERM``, ``HUP``, ``KILL``, ...) to the shell's foreground job."""
        return self._call("shell_signal", workspace_id=workspace_id, shell_id=shell_id, signal_name=signal_name)

    def close_shell(self, workspace_id: str, shell_id: str) -> Dict[str, Any]:
        """Closes the shell."""
        return self._call("shell_close", workspace_id=workspace_id, shell_id=shell_id)
