"""Shared helpers of the SDK tests. They run in a fresh venv where the built wheel is
installed (crates/pyro-cli/tests/it/sdk.rs makes it), so `pyro_mcp` and `pyro` are the
wheel's. Each test gets a private state dir; the cache (guest images) is the caller's."""

import os
import sys
from pathlib import Path

import pytest

GUESTS = os.environ.get("PYRO_SDK_GUEST_TESTS") == "1"
needs_guests = pytest.mark.skipif(not GUESTS, reason="boots real guests; set PYRO_SDK_GUEST_TESTS=1 (scripts/test.sh does)")
ENV = os.environ.get("PYRO_SDK_ENVIRONMENT", "debian:12")


@pytest.fixture
def pyro(tmp_path):
    """A `Pyro` on a private state dir, closed after the test."""
    from pyro_mcp import Pyro

    with Pyro(state_dir=tmp_path / "state") as client:
        yield client


def venv_pyro() -> str:
    """The `pyro` the wheel put next to this interpreter."""
    path = Path(sys.executable).parent / "pyro"
    assert path.is_file(), f"the wheel did not install {path}"
    return str(path)


def seed(root: Path, files: dict) -> Path:
    """A seed directory holding `files` (name -> (text, mode))."""
    root.mkdir(parents=True, exist_ok=True)
    for name, (text, mode) in files.items():
        (root / name).write_text(text)
        (root / name).chmod(mode)
    return root


def labels(story: str, **more) -> dict:
    return {"suite": "workspace-use-case-smoke", "use_case": story, **more}


