"""`plugin-backend db upgrade` and `db status`, the commands an operator runs, on an
SQLite file and on a real PostgreSQL server (a plain ``postgresql://`` URL)."""

from __future__ import annotations

import os
import subprocess
import sys

from plugin_backend.store.store import HEAD_REVISION


def _db(command: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plugin_backend", "db", command],
        env={**os.environ, "PLUGIN_BACKEND_STORE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_db_upgrade_then_status(store_url: str) -> None:
    url = store_url.replace("postgresql+psycopg://", "postgresql://")  # as users write it
    before = _db("status", url)
    assert before.returncode == 0, before.stderr
    assert "schema revision: none (run db upgrade)" in before.stdout
    upgrade = _db("upgrade", url)
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"schema at revision {HEAD_REVISION}" in upgrade.stdout
    after = _db("status", url)
    assert after.returncode == 0, after.stderr
    assert f"schema revision: {HEAD_REVISION}" in after.stdout
    assert "outbox: {'pending': 0, 'delivered': 0, 'failed': 0}" in after.stdout
