"""The fuzzed app, built once per session."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.fuzz.support import build_app


@pytest.fixture(scope="session")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return build_app(tmp_path_factory.mktemp("fuzz") / "store.db")
