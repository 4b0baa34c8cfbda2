"""docs/configuration.md is generated from the Settings fields (`make docs`): a setting
added without a description, or a page not regenerated, fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plugin_backend.config import ENV_PREFIX, Settings, load_settings
from plugin_backend.config_doc import render_configuration

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_the_committed_page_is_the_generated_one() -> None:
    assert PAGE.read_text(encoding="utf-8") == render_configuration(), (
        "docs/configuration.md is stale: run `make docs`"
    )


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_says_what_it_does(name: str) -> None:
    description = Settings.model_fields[name].description or ""
    assert len(description.split()) >= 2, f"Settings.{name} needs a description"


def test_the_page_names_exactly_the_variables_the_service_reads() -> None:
    named = set(re.findall(r"^\| `(PLUGIN_BACKEND_[A-Z0-9_]+)` \|", PAGE.read_text(), re.M))
    assert named == {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    # ...and each is accepted as documented: set but empty leaves the default.
    settings = load_settings(dict.fromkeys(named, ""))
    assert settings == load_settings({})
