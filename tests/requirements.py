"""What a test needs from the machine: a missing tool, package or data set skips it on a developer's
machine and fails it under CI (the `CI` environment variable set, as CI services do), where every
one of them is installed and a skip would hide a test that no longer runs.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

CHROMIUM_NAMES = ("chromium", "chromium-browser", "chromium-headless-shell")
"""The names Debian and Ubuntu give the Chromium binary, in the order they are tried."""


def under_ci() -> bool:
    """Whether the `CI` environment variable is set (to anything but "", "0" or "false")."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def missing(what: str) -> NoReturn:
    """Skip the test because `what` is missing, or fail it under CI."""
    if under_ci():
        pytest.fail(f"{what} (CI is set: everything the suite uses must be installed)", pytrace=False)
    pytest.skip(what, allow_module_level=True)


def require_tool(name: str) -> str:
    """The path of the executable `name` on PATH; skips (locally) or fails (CI) without it."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (not on PATH)")
    return path


def require_module(name: str) -> ModuleType:
    """The module `name`, imported; skips (locally) or fails (CI) when it cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"Python module {name} is not installed ({exc})")


def find_chromium() -> str | None:
    """Debian's Chromium binary (the first of CHROMIUM_NAMES on PATH), None without one."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def require_chromium() -> str:
    """`find_chromium()`; skips (locally) or fails (CI) without it."""
    path = find_chromium()
    if path is None:
        missing(f"Chromium is not installed (none of {', '.join(CHROMIUM_NAMES)} on PATH)")
    return path


def shared_audio_dir() -> Path:
    """The real speech with references (refs.json): $PALABRE_SHARED_AUDIO, default <repo>/../shared/audio.

    Skips (locally) or fails (CI) when the folder or its refs.json is missing.
    """
    folder = Path(os.environ.get("PALABRE_SHARED_AUDIO") or REPO_ROOT.parent / "shared" / "audio")
    if not (folder / "refs.json").is_file():
        missing(f"no real speech at {folder} (set PALABRE_SHARED_AUDIO to the folder holding refs.json)")
    return folder
