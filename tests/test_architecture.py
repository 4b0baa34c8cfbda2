"""Keeps the dependency rule: pure packages import no web/HTTP/metrics/storage
libraries, imports point inward (core <- use cases <- adapters, web and entry points),
and the web app loads without torch or transformers."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "plugin_backend"

# Modules that must stay pure: numbers and value objects in, the same out.
PURE = [
    "types.py",
    "timegrid.py",
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
    "training/corpus.py",
    "rca",
    "llm",
    "queries.py",
    "incident_review.py",
    "health.py",
]
# Documented exception: a transformer built without an injected model loader (the
# CLI, tests) reads its weights through the artefact adapter, lazily.
ALLOWED = {
    "scoring/transformer.py": {"plugin_backend.adapters.artifacts"},
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
        if p.name not in allowed and _reads_environ(p)
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


# --- the direction of imports: core <- use cases <- edges --------------------------
# Every top-level module or package of plugin_backend belongs to one layer. A module may
# import its own layer and the layers below it, never one above. A new module must be
# placed here (the last test says so), which is the moment to decide where it belongs.
CORE = {
    # value objects, the exception tree, the interfaces use cases depend on
    "types",
    "errors",
    "ports",
    # pure parsing and time handling
    "promql",
    "timeparse",
    "timegrid",
    "deadline",
    # the typed queries the datasource use cases take; detectors, root cause, prompts
    "queries",
    "scoring",
    "rca",
    "llm",
    # incidents/annotations, watch rules and alert payloads as values and pure rules:
    # ports.py speaks in Incident, so it is core, not a use case
    "incidents",
    "rules",
    "alerts",
}
USE_CASES = {
    "service",
    "detection",
    "explain",
    "watch",
    "alert_handling",
    "delivery",
    # what the human pages show: incidents and their plots, the dependencies' health
    "incident_review",
    "health",
}
EDGES = {
    "__init__",  # the package root: __version__ only
    "__main__",
    "adapters",
    "store",
    # Grafana's JSON-datasource wire format: parses into `queries`, renders results; pure,
    # but an edge: use cases never see Grafana's payloads (camelCase, epoch-ms)
    "datasource",
    "web",
    "cli",
    "server",
    "bootstrap",
    "worker",
    "worker_main",
    "llm_server",
    "telemetry",
    "logs",
    "config",
    "config_doc",
    "scale",  # the Celery engine: tasks and the tick scheduler, an entry point like worker
    "training",  # `plugin-backend train`: writes weights through the artefact adapter
    "demoapp",  # the compose stack's demo exporter (`python -m plugin_backend.demoapp`)
}
LAYER_OF = {name: layer for layer, names in enumerate((CORE, USE_CASES, EDGES)) for name in names}
LAYER_NAMES = ("core", "use case", "edge")
# Known upward imports, each with its reason. Report new ones rather than adding them.
UPWARD_ALLOWED = {
    # Model weights are read through the artefact adapter (format version, checks); a
    # transformer built without an injected loader imports it lazily, when it loads.
    ("scoring/transformer.py", "adapters"),
}


def _top_level(path: Path) -> str:
    first = path.relative_to(PACKAGE).parts[0]
    return first.removesuffix(".py")


def _internal_imports(path: Path) -> set[str]:
    """Top-level plugin_backend names this file imports, lazily or not."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
            if node.module == "plugin_backend":
                modules += [f"plugin_backend.{alias.name}" for alias in node.names]
        else:
            modules = []
        for module in modules:
            parts = module.split(".")
            if parts[0] == "plugin_backend":
                names.add(parts[1] if len(parts) > 1 else "__init__")
    return names


def _package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_every_module_has_a_layer() -> None:
    unplaced = {_top_level(p) for p in _package_files()} - set(LAYER_OF)
    assert not unplaced, f"place {sorted(unplaced)} in CORE, USE_CASES or EDGES"


def test_the_package_root_exports_only_its_version() -> None:
    # `from plugin_backend import __version__` is the one import of the root: it must
    # not pull a layer in with it.
    assert _internal_imports(PACKAGE / "__init__.py") == set()


@pytest.mark.parametrize("path", _package_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_inward(path: Path) -> None:
    own = LAYER_OF.get(_top_level(path))
    if own is None:
        pytest.fail(f"{_top_level(path)} has no layer")
    relative = str(path.relative_to(PACKAGE))
    upward = {
        f"{name} ({LAYER_NAMES[LAYER_OF[name]]})"
        for name in _internal_imports(path)
        if name in LAYER_OF
        and name != "__init__"
        and LAYER_OF[name] > own
        and (relative, name) not in UPWARD_ALLOWED
    }
    assert not upward, f"{relative} ({LAYER_NAMES[own]}) imports {sorted(upward)}"


def test_the_allowed_upward_imports_still_exist() -> None:
    # An exception that is no longer needed is removed, so it cannot hide a new one.
    for relative, name in UPWARD_ALLOWED:
        assert name in _internal_imports(PACKAGE / relative), (relative, name)


# --- the edges that must stay thin -------------------------------------------------------
# The incident pages only render: their data comes from use cases, never straight from
# adapters, the store, the settings or the network. Their sibling web modules are the
# pure view models and plots, and the shared HTTP answers.
PAGE_SIBLINGS = {"incident_views", "plots", "errors", "http"}


def _imported_modules(path: Path) -> set[str]:
    """Every module name this file imports, lazily or under TYPE_CHECKING too."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_pages_import_only_use_cases_and_core() -> None:
    path = PACKAGE / "web" / "pages.py"
    # the package root holds only __version__ (a test above keeps it so)
    layers = {n for n in _internal_imports(path) if n in LAYER_OF} - {"__init__", "web"}
    outside = {f"{n} ({LAYER_NAMES[LAYER_OF[n]]})" for n in layers if LAYER_OF[n] > 1}
    assert not outside, f"web/pages.py imports {sorted(outside)}"
    siblings = {
        m.split(".")[2]
        for m in _imported_modules(path)
        if m.startswith("plugin_backend.web.") and len(m.split(".")) > 2
    }
    assert siblings <= PAGE_SIBLINGS, f"web/pages.py imports web.{sorted(siblings - PAGE_SIBLINGS)}"
    network = {m for m in _imported_modules(path) if m.split(".")[0] in {"requests", "urllib3"}}
    assert not network, f"web/pages.py calls the network itself: {sorted(network)}"


def test_only_the_http_layer_imports_requests() -> None:
    # Retries and the mapping of transport errors live once, in adapters/http.py.
    offenders = {
        str(p.relative_to(PACKAGE))
        for p in (PACKAGE / "adapters").rglob("*.py")
        if p.name != "http.py"
        and any(m.split(".")[0] in {"requests", "urllib3"} for m in _imported_modules(p))
    }
    assert not offenders, f"{sorted(offenders)} import requests: use adapters/http.py"


# --- test tooling stays out of the service and its wheel -----------------------------
# testkit/ (fake Grafana, simulators, Prometheus/PostgreSQL/Redis launchers) sits beside
# the package: tests and benchmarks import it from the checkout, the service never does.
ROOT = PACKAGE.parent
TOOLING = {"testkit", "tests", "benchmarks"}


def _names_tooling(path: Path) -> set[str]:
    """Tooling this file imports, or names in a string (`-m testkit.x`, importlib)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    strings = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (node.value == "testkit" or node.value.startswith("testkit."))
    }
    imported = {m for m in _imported_modules(path) if m.split(".")[0] in TOOLING}
    return imported | strings


def test_the_runtime_package_never_imports_the_testkit() -> None:
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(_names_tooling(p)) for p in PACKAGE.rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_wheel_holds_the_package_and_not_the_testkit() -> None:
    # The package list setuptools builds the wheel from ([tool.setuptools.packages.find]).
    pyprojecttoml = pytest.importorskip("setuptools.config.pyprojecttoml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # setuptools' deprecation notes on other fields
        config = pyprojecttoml.read_configuration(ROOT / "pyproject.toml", expand=True)
    packages = set(config["tool"]["setuptools"]["packages"])
    assert {"plugin_backend", "plugin_backend.scoring", "plugin_backend.web"} <= packages
    assert (ROOT / "testkit" / "__init__.py").is_file()
    assert not {p for p in packages if p.split(".")[0] in TOOLING}, sorted(packages)
