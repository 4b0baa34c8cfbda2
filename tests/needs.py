"""What a test needs from outside the repository, and what happens when it is missing.

Locally a missing binary, Python extra or ``../shared`` (the contracts and the nab-dev
data set beside the clone) skips the test with the reason. In CI (``CI`` set) a
missing binary or extra fails it: CI installs them. ``../shared`` is not part of the
repository, so CI fails for it only where it says the material is there
(``TESTS_EXPECT_SHARED=1``, which ``.ci/run`` exports when ``../shared``
exists): then a missing file is a regression, never a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = [
    "EXPECT_SHARED",
    "missing_shared",
    "require_binary",
    "require_installed",
    "require_shared",
    "shared_path",
]

REPO = Path(__file__).resolve().parents[1]
EXPECT_SHARED = "TESTS_EXPECT_SHARED"


def _expects_shared() -> bool:
    return bool(os.environ.get("CI")) and os.environ.get(EXPECT_SHARED) == "1"


def shared_path(*parts: str) -> Path:
    """``../shared/<parts>`` beside the clone (or ``shared/<parts>`` inside it, where a
    copy of the working tree carries it), whether or not it exists."""
    for root in (REPO.parent / "shared", REPO / "shared"):
        if (root / Path(*parts)).exists():
            return root / Path(*parts)
    return REPO.parent / "shared" / Path(*parts)


def missing_shared(what: str) -> NoReturn:
    """Skip for lack of ``what`` under ../shared, or fail where CI says it is there."""
    message = f"{what} not found under ../shared beside this checkout"
    if _expects_shared():
        pytest.fail(f"{EXPECT_SHARED}=1 in CI, yet {message}", pytrace=False)
    pytest.skip(message)


def require_shared(*parts: str) -> Path:
    """The path of ``../shared/<parts>``; skip (or fail, see module doc) when absent."""
    path = shared_path(*parts)
    if not path.exists():
        missing_shared("/".join(parts))
    return path


def require_installed(what: str, reason: str) -> NoReturn:
    """Skip for lack of ``what`` (a Python extra), except in CI, which installs it."""
    message = f"{what} is not installed ({reason}; `make test` installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide {message}", pytrace=False)
    pytest.skip(message)


def require_binary(name: str, hint: str) -> str:
    """The binary's path; skip without it, except in CI (``CI`` set), where it must exist."""
    found = shutil.which(name)
    if found is not None:
        return found
    message = f"{name} not found on PATH ({hint}; `make system-deps` installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide {name}: {message}", pytrace=False)
    pytest.skip(message)
