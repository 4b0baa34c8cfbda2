"""Keeps the dependency rule: pure packages import no web/HTTP/metrics/storage
libraries, and the web app loads without torch or transformers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "plugin_backend"

# Modules that must stay pure: numbers and value objects in, the same out.
PURE = [
    "types.py",
    "errors.py",
    "ports.py",
    "promql.py",
    "service.py",
    "detection.py",
    "explain.py",
    "incidents.py",
    "rules.py",
    "alerts.py",
    "watch.py",
    "alert_handling.py",
    "delivery.py",
    "datasource",
    "scoring",
    "rca",
    "llm",
]
# Documented exceptions: model files are read and written through the artefact
# adapter (atomic writes, format version), lazily, by the transformer and trainer.
ALLOWED = {
    "scoring/transformer.py": {"plugin_backend.adapters.artifacts"},
    "scoring/train.py": {"plugin_backend.adapters.artifacts"},
}
FORBIDDEN = {
    "flask",
    "werkzeug",
    "requests",
    "urllib3",
    "prometheus_client",
    "sqlalchemy",
    "gunicorn",
    "plugin_backend.adapters",
    "plugin_backend.web",
    "plugin_backend.config",
    "plugin_backend.telemetry",
    "plugin_backend.store",
    "plugin_backend.bootstrap",
}


def _python_files(entry: str) -> list[Path]:
    path = PACKAGE / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _reads_environ(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, ast.Attribute) and node.attr == "environ" for node in ast.walk(tree)
    )


@pytest.mark.parametrize("path", [p for e in PURE for p in _python_files(e)], ids=str)
def test_pure_modules_import_no_io_libraries(path: Path) -> None:
    allowed = ALLOWED.get(str(path.relative_to(PACKAGE)), set())
    bad = {
        name
        for name in _imports(path) - allowed
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"
    assert not _reads_environ(path), f"{path.relative_to(PACKAGE)} reads os.environ"


def test_only_config_and_process_wiring_touch_os_environ() -> None:
    allowed = {"config.py", "server.py", "telemetry.py"}
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name not in allowed and "devtools" not in p.parts and _reads_environ(p)
    ]
    assert not offenders


def test_importing_the_web_app_does_not_import_torch_or_transformers() -> None:
    code = (
        "import sys\n"
        "from plugin_backend.web import create_app\n"
        "from plugin_backend.config import load_settings\n"
        "create_app(load_settings({}))\n"
        "heavy = [m for m in ('torch', 'transformers', 'statsmodels') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    assert result.stdout.strip() == ""
