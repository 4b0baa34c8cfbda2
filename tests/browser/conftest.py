"""Browser tests: where their artefacts (screenshots) went, in the terminal summary."""

from __future__ import annotations

import pytest

_ARTIFACTS = pytest.StashKey[list[str]]()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> list[str]:
    """Append paths (relative to the repository root) to list them after the run."""
    return request.config.stash.setdefault(_ARTIFACTS, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    paths = terminalreporter.config.stash.get(_ARTIFACTS, [])
    if paths:
        terminalreporter.write_sep("-", "browser test artifacts")
        for path in paths:
            terminalreporter.write_line(path)
