"""The SDK's channel to one long-lived ``pyro __sdk`` child process.

The child speaks newline-delimited JSON on its stdin/stdout (see the Rust module
``pyro_mcp::bridge``): a hello line, then one reply line per request, preceded by live
output lines when the request asked for them. Calls are serialised by a lock, so a
:class:`Bridge` may be shared between threads. The child reads end-of-file when this
process exits or dies (it alone holds the pipe), and exits with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from typing import IO, Any, Callable, Dict, Mapping, Optional

from .errors import BridgeError, PyroError, error_for

#: The line protocol this SDK speaks.
BRIDGE_PROTOCOL = 1

#: Receives one chunk of a command's output, decoded as UTF-8.
OutputCallback = Callable[[str], None]


class Bridge:
    """One ``pyro __sdk`` child and the request/reply exchange with it."""

    def __init__(self, binary: str, env: Mapping[str, str]) -> None:
        self._binary = binary
        self._env = dict(env)
        self._lock = threading.Lock()
        self._next_id = 1
        self._process: Optional[subprocess.Popen[bytes]] = None
        self.version: Optional[str] = None

    def _start(self) -> subprocess.Popen[bytes]:
        try:
            process = subprocess.Popen(
                [self._binary, "__sdk"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self._env,
                close_fds=True,
            )
        except OSError as error:
            raise BridgeError(f"cannot start {self._binary}: {error}") from None
        assert process.stdout is not None
        hello = self._read(process)
        if hello.get("bridge") != "pyro" or hello.get("protocol") != BRIDGE_PROTOCOL:
            _kill(process)
            raise BridgeError(f"{self._binary} does not speak SDK bridge protocol {BRIDGE_PROTOCOL}: {hello!r}")
        self.version = str(hello.get("version"))
        return process

    def _read(self, process: subprocess.Popen[bytes]) -> Dict[str, Any]:
        stdout: IO[bytes] = process.stdout  # type: ignore[assignment]
        line = stdout.readline()
        if not line:
            status = process.wait()
            self._process = None
            raise BridgeError(f"the pyro child process exited (status {status})")
        try:
            message = json.loads(line)
        except ValueError:
            _kill(process)
            self._process = None
            raise BridgeError(f"the pyro child process wrote a line that is not JSON: {line[:200]!r}") from None
        if not isinstance(message, dict):
            raise BridgeError(f"the pyro child process wrote {message!r}")
        return message

    def call(
        self,
        method: str,
        params: Mapping[str, Any],
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> Dict[str, Any]:
        """Runs one tool and returns its result, or raises the matching :class:`PyroError`.

        Output callbacks run on this thread while the command runs; an exception one of
        them raises is re-raised once the call is over (the call itself is not stopped).
        """
        callbacks = {"stdout": on_stdout, "stderr": on_stderr}
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()
            process = self._process
            request_id = self._next_id
            self._next_id += 1
            request = {"id": request_id, "method": method, "params": dict(params), "stream": bool(on_stdout or on_stderr)}
            failure: Optional[BaseException] = None
            try:
                assert process.stdin is not None
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
                while True:
                    message = self._read(process)
                    if message.get("id") is None and message.get("ok") is False:
                        raise BridgeError(str(message.get("error")))
                    if message.get("id") != request_id:
                        continue
                    if "output" in message:
                        callback = callbacks.get(str(message["output"]))
                        if callback is not None and failure is None:
                            try:
                                callback(str(message.get("data", "")))
                            except Exception as error:  # re-raised after the reply
                                failure = error
                        continue
                    if message.get("ok"):
                        result = message.get("result")
                        if failure is not None:
                            raise failure
                        return result if isinstance(result, dict) else {"result": result}
                    raise error_for(str(message.get("error")), str(message.get("error_kind")))
            except (BrokenPipeError, ConnectionResetError):
                self._process = None
                raise BridgeError("the pyro child process went away") from None
            except PyroError:
                raise
            except BaseException:
                # Interrupted mid-call (Ctrl-C, a callback's error escaping): the stream is
                # out of step, so the child goes, cancelling its work; the next call starts
                # a fresh one.
                if failure is None:
                    self.close_locked()
                raise

    def close(self) -> None:
        """Ends the child (its in-flight work is cancelled)."""
        with self._lock:
            self.close_locked()

    def close_locked(self) -> None:
        """:meth:`close` for a caller that holds the lock."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            _kill(process)
        if process.stdout is not None:
            process.stdout.close()


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        process.kill()
        process.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pass


def child_env(cache_dir: Optional[os.PathLike[str] | str], state_dir: Optional[os.PathLike[str] | str]) -> Dict[str, str]:
    """The child's environment: this process's, with the chosen pyro directories."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["PYRO_CACHE_DIR"] = os.path.abspath(os.fspath(cache_dir))
    if state_dir is not None:
        env["PYRO_STATE_DIR"] = os.path.abspath(os.fspath(state_dir))
    return env
