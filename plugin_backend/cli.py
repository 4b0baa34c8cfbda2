"""The ``plugin-backend`` command: thin wiring over the service.

``serve`` (the API under gunicorn), ``worker``, ``score``, ``explain``, ``train``,
``llm-serve``, and the store's ``rules``/``db``/``outbox``/``incidents`` helpers;
each handler imports what it needs lazily, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from plugin_backend import __version__
from plugin_backend.config import Settings, load_settings
from plugin_backend.errors import BackendError, ConfigError
from plugin_backend.logs import configure_logging
from plugin_backend.scoring.registry import DEFAULT_DETECTOR, available

if TYPE_CHECKING:
    from plugin_backend.store import Store

__all__ = ["build_parser", "main"]

log = logging.getLogger("plugin_backend")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plugin-backend",
        description="AIOps backend for Grafana: JSON datasource, anomaly scores, root cause.",
    )
    parser.add_argument("--version", action="version", version=f"plugin-backend {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP API under gunicorn")
    serve.add_argument("--host", help="bind address (env PLUGIN_BACKEND_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env PLUGIN_BACKEND_PORT, default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default 2)")
    serve.set_defaults(handler=_serve)

    score = commands.add_parser(
        "score",
        help="score a timestamp,value CSV (NAB format works) and write expected/band/score/alarms",
    )
    score.add_argument("input", metavar="INPUT.csv")
    score.add_argument("--output", "-o", required=True, metavar="OUT.csv")
    score.add_argument(
        "--detector",
        help=f"one of {', '.join(available())} (default: from --config, else {DEFAULT_DETECTOR})",
    )
    score.add_argument("--config", metavar="FILE", help="YAML: detector, sensitivity, window, ...")
    score.set_defaults(handler=_score)

    explain = commands.add_parser(
        "explain", help="rank the likely root causes of a symptom (PromQL) at a time"
    )
    explain.add_argument("--prometheus-url", help="default: the configured source (or the demo)")
    explain.add_argument("--query", required=True, help="the symptom, as PromQL")
    explain.add_argument(
        "--at", required=True, help="when it was noticed: unix seconds or ISO-8601"
    )
    explain.add_argument(
        "--window",
        default=None,
        help="how far back the cause may lie (default: from the symptom's own onset)",
    )
    explain.add_argument("--json", action="store_true", help="print the JSON report")
    explain.set_defaults(handler=_explain)

    train = commands.add_parser(
        "train", help="train the transformer detector's weights (train --help)", add_help=False
    )
    train.set_defaults(handler=_train)

    llm_serve = commands.add_parser(
        "llm-serve",
        help="serve the packaged offline LLM over an OpenAI-compatible API (one per machine)",
    )
    llm_serve.add_argument("--host", dest="llm_host", default="127.0.0.1", help="(127.0.0.1)")
    llm_serve.add_argument("--port", dest="llm_port", type=int, default=8091, help="(8091)")
    llm_serve.add_argument(
        "--cache-dir",
        type=Path,
        help="where the verified, converted weights live (~/.cache/plugin-backend/llm)",
    )
    llm_serve.add_argument(
        "--prepare-only",
        action="store_true",
        help="join, verify (sha256) and convert the weights, print the folder, exit",
    )
    llm_serve.set_defaults(handler=_llm_serve)

    _add_store_commands(commands)

    check = commands.add_parser("config", help="validate the configuration and print it")
    check.set_defaults(handler=_print_config)
    return parser


def _add_store_commands(commands: Any) -> None:
    """worker, rules, db, outbox, incidents: the commands around the store."""
    worker = commands.add_parser(
        "worker",
        help="run watch rules, process alert webhooks, deliver annotations to Grafana",
    )
    worker.add_argument("--rules", metavar="FILE", help="watch rules YAML (PLUGIN_BACKEND_RULES)")
    worker.add_argument(
        "--once",
        action="store_true",
        help="run one cycle of everything, exit (the one-process worker; refused with "
        "--engine celery)",
    )
    worker.add_argument(
        "--since",
        metavar="DURATION",
        help="first replay this much history as if live (e.g. 6h), then go on",
    )
    worker.add_argument(
        "--metrics-port", type=int, help="serve the worker's /metrics here (e.g. 9466)"
    )
    worker.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address of the worker's /metrics (127.0.0.1, as the API's; 0.0.0.0 in a container)",
    )
    worker.add_argument(
        "--engine",
        choices=("loop", "celery"),
        default="loop",
        help="loop: this one process does everything (default); celery: a Celery worker on "
        "PLUGIN_BACKEND_BROKER_URL, as many as wanted on any machines (the scale extra)",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="--engine celery: task processes (default: one per CPU)",
    )
    worker.add_argument(
        "--queues",
        default="rules,delivery",
        metavar="Q[,Q]",
        help="--engine celery: the queues this worker serves (rules, delivery, notes); "
        "`--queues notes --concurrency K` writes LLM notes, K at a time",
    )
    worker.add_argument(
        "--no-schedule",
        action="store_true",
        help="--engine celery: run tasks only, enqueue no ticks (another worker schedules)",
    )
    worker.add_argument(
        "--note-concurrency",
        type=int,
        default=1,
        metavar="K",
        help="--engine celery without `notes` in --queues: start a note worker beside this "
        "one writing K LLM notes at a time (0: none here; default 1)",
    )
    worker.set_defaults(handler=_worker)

    rules = commands.add_parser("rules", help="watch-rules files")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    rules_check = rules_commands.add_parser("check", help="validate a rules file (line-precise)")
    rules_check.add_argument("file", metavar="FILE")
    rules_check.set_defaults(handler=_rules_check)

    db = commands.add_parser("db", help="the store (PLUGIN_BACKEND_STORE_URL)")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="migrate the schema to this version").set_defaults(
        handler=_db_upgrade
    )
    db_commands.add_parser("status", help="schema revision and row counts").set_defaults(
        handler=_db_status
    )

    outbox = commands.add_parser("outbox", help="annotations waiting for (or refused by) Grafana")
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    outbox_list = outbox_commands.add_parser("status", help="counts and the latest rows")
    outbox_list.add_argument("--state", choices=("pending", "delivered", "failed"))
    outbox_list.add_argument("--limit", type=int, default=20)
    outbox_list.set_defaults(handler=_outbox_status)
    outbox_commands.add_parser(
        "retry-failed", help="queue refused annotations again (after fixing the cause)"
    ).set_defaults(handler=_outbox_retry)

    incidents = commands.add_parser("incidents", help="list stored incidents")
    incidents.add_argument("--status", choices=("open", "closed"))
    incidents.add_argument("--rule")
    incidents.add_argument("--limit", type=int, default=20)
    incidents.add_argument("--json", action="store_true")
    incidents.set_defaults(handler=_incidents)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":  # the trainer parses its own flags
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.train_args = extra
    overrides = {
        key: value
        for key in ("host", "port", "workers", "prometheus_url")
        if (value := getattr(args, key, None)) is not None
    }
    try:
        settings = load_settings(overrides=overrides)
    except ConfigError as exc:
        print(f"plugin-backend: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    handler: Any = args.handler
    try:
        result: int = handler(settings, args)
    except BackendError as exc:  # a clear line, never a traceback
        print(f"plugin-backend {args.command}: {exc.message}", file=sys.stderr)
        return 2
    return result


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    from plugin_backend.server import run_gunicorn
    from plugin_backend.store import Store  # not bootstrap: prometheus-client must wait

    store = Store(settings.store_url)  # migrated once, before gunicorn forks its workers
    store.migrate()
    store.close()
    return run_gunicorn(settings)


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    if args.engine == "celery" and args.metrics_port:
        # the pool's processes write their metrics to files this one serves: set before
        # prometheus-client is first imported (it picks its value class then)
        from plugin_backend.server import prepare_multiproc_dir

        prepare_multiproc_dir(settings)
    from plugin_backend.worker_main import run_worker

    return run_worker(settings, args)


def _rules_check(_settings: Settings, args: argparse.Namespace) -> int:
    from plugin_backend.rules import load_rules

    try:
        rules = load_rules(args.file)
    except ConfigError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(f"{args.file}: {len(rules.rules)} rules OK: {', '.join(rules.names)}")
    return 0


def _checked_store(settings: Settings) -> Store:
    """The configured store, refused (``ConfigError``) unless its schema is current."""
    from plugin_backend.bootstrap import build_store

    store = build_store(settings)
    store.check_schema()
    return store


def _db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    from plugin_backend.bootstrap import build_store

    store = build_store(settings)
    revision = store.migrate()
    print(f"{store!r}: schema at revision {revision}")
    return 0


def _db_status(settings: Settings, _args: argparse.Namespace) -> int:
    from plugin_backend.bootstrap import build_store

    store = build_store(settings)
    revision = store.schema_revision()
    print(f"store: {store!r}\nschema revision: {revision or 'none (run db upgrade)'}")
    if revision:
        print(f"incidents: {len(store.list_incidents(limit=1_000_000))}")
        print(f"outbox: {store.outbox_counts()}")
        print(f"alert queue: {store.alert_counts()}")
    return 0


def _outbox_status(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    store = _checked_store(settings)
    counts = store.outbox_counts()
    rows = store.outbox_rows(args.state, limit=args.limit)
    print("  ".join(f"{state}: {n}" for state, n in counts.items()))
    for row in rows:
        when = datetime.fromtimestamp(row.updated_s, UTC).strftime("%Y-%m-%d %H:%M:%S")
        target = f"{row.dashboard_uid}/{row.panel_id}" if row.dashboard_uid else "-"
        error = f"  last error: {row.last_error}" if row.last_error else ""
        print(
            f"{when}  {row.state:<9}  incident {row.incident_id}  panel {target}  "
            f"v{row.delivered_version}/{row.version}  attempts {row.attempts}"
            f"  grafana id {row.grafana_id or '-'}{error}"
        )
    return 0


def _outbox_retry(settings: Settings, _args: argparse.Namespace) -> int:
    import time

    count = _checked_store(settings).retry_failed(time.time())
    print(f"{count} failed annotations queued again")
    return 0


def _incidents(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    import orjson

    found = _checked_store(settings).list_incidents(
        status=args.status, rule=args.rule, limit=args.limit
    )
    if args.json:
        from dataclasses import asdict

        print(orjson.dumps([asdict(i) for i in found], option=orjson.OPT_INDENT_2).decode())
        return 0
    for incident in found:
        start = datetime.fromtimestamp(incident.start_s, UTC).strftime("%Y-%m-%d %H:%M")
        minutes = (incident.end_s - incident.start_s) / 60
        print(f"{incident.id}  {start}  {minutes:5.0f} min  {incident.status:<6}  {incident.title}")
        if incident.cause:
            print(f"{'':18}likely cause: {incident.cause}")
    return 0


def _score(_settings: Settings, args: argparse.Namespace) -> int:
    import yaml

    from plugin_backend.adapters.csv_io import load_series_csv, write_scored_csv
    from plugin_backend.errors import BackendError
    from plugin_backend.scoring.options import parse_score_config
    from plugin_backend.scoring.registry import get_detector
    from plugin_backend.scoring.windows import alarms, find_windows

    try:
        raw = None
        if args.config:
            try:
                with open(args.config, encoding="utf-8") as handle:
                    raw = yaml.safe_load(handle)
            except (OSError, yaml.YAMLError) as exc:
                print(f"plugin-backend score: {args.config}: {exc}", file=sys.stderr)
                return 2
        config = parse_score_config(raw, args.config or "options")
        series = load_series_csv(args.input)
        for warning in series.warnings:
            log.warning("%s", warning)
        detector = get_detector(args.detector or config.detector, **config.detector_kwargs())
        scored = detector.score(series.timestamps_s, series.values)
        policy = config.window_policy()
        flags = alarms(scored, policy)
        rows, row_flags, row_stamps = series.per_input_row(scored, flags)
        write_scored_csv(args.output, rows, row_flags, timestamp_text=row_stamps)
    except BackendError as exc:
        print(f"plugin-backend score: {exc.message}", file=sys.stderr)
        return 2
    windows = find_windows(scored, policy)
    print(
        f"{args.input}: {len(rows)} rows scored with {detector.name}; "
        f"{int(flags.sum())} alarms, {len(windows)} anomaly windows -> {args.output}"
    )
    return 0


def _explain(settings: Settings, args: argparse.Namespace) -> int:
    import orjson

    from plugin_backend.bootstrap import build_explain, build_grafana, build_source
    from plugin_backend.errors import BackendError
    from plugin_backend.explain import llm_hint, render_report
    from plugin_backend.timeparse import parse_duration_s, parse_time_s

    try:
        service = build_explain(settings, build_source(settings), events=build_grafana(settings))
        report = service.explain(
            args.query,
            parse_time_s(args.at, what="--at"),
            None if args.window is None else parse_duration_s(args.window, what="--window"),
        ).to_dict()
    except BackendError as exc:
        print(f"plugin-backend explain: {exc.message}", file=sys.stderr)
        return 2
    hint = llm_hint(report["llm"])
    if hint is not None:
        print(f"plugin-backend explain: {hint}", file=sys.stderr)
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_report(report))
    return 0


def _llm_serve(_settings: Settings, args: argparse.Namespace) -> int:
    from plugin_backend.errors import BackendError

    try:
        if args.prepare_only:
            from plugin_backend.adapters.llm_weights import ensure_local_model

            print(ensure_local_model(args.cache_dir))
            return 0
        from plugin_backend.llm_server import serve_llm

        return serve_llm(args.llm_host, args.llm_port, args.cache_dir)
    except BackendError as exc:
        print(f"plugin-backend llm-serve: {exc.message}", file=sys.stderr)
        return 2


def _train(_settings: Settings, args: argparse.Namespace) -> int:
    from plugin_backend.training.train import main_train

    return main_train(list(args.train_args))


def _print_config(settings: Settings, _args: argparse.Namespace) -> int:
    for key, value in settings:
        shown = _without_password(value) if isinstance(value, str) else value
        print(f"{key} = {shown!r}")
    return 0


def _without_password(text: str) -> str:
    """A URL's password as ``***`` (``postgresql://u:***@db/x``); other text as it is."""
    parts = urlsplit(text)
    if not parts.scheme or parts.password is None:
        return text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
