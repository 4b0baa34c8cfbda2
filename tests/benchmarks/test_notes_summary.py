"""The notes benchmark's summary (benchmarks.bench_notes): naming the true cause is
counted for the LLM's notes and the template fallbacks apart, and the ranker's
top-1 at series and at entity level apart."""

from __future__ import annotations

from benchmarks.bench_notes import SUMMARY_HEADER, NoteOutcome, entity_of, summary_row


def _outcome(by_llm: bool, names: bool, series: bool, entity: bool) -> NoteOutcome:
    return NoteOutcome(by_llm, names, series, entity, latency_s=1.0)


def test_llm_and_template_notes_are_counted_apart() -> None:
    outcomes = [
        _outcome(True, True, True, True),
        _outcome(True, False, False, True),
        _outcome(True, False, False, False),
        _outcome(False, True, True, True),  # a template names the top cause: right here
        _outcome(False, False, False, False),
    ]
    row = dict(zip(SUMMARY_HEADER, summary_row(outcomes), strict=True))
    assert row["LLM note used"] == "3/5 (60%)"
    assert row["LLM notes naming true cause"] == "1/3"
    assert row["template notes naming true cause"] == "1/2"
    assert row["ranker top-1 series"] == "2/5"
    assert row["ranker top-1 entity"] == "3/5"
    assert row["p50 s"] == row["p95 s"] == "1.0"


def test_entity_of_a_series_is_its_service_else_its_node() -> None:
    assert entity_of('pg_connections_in_use{job="demo", service="postgres"}') == "postgres"
    assert entity_of('node_disk_io_utilization_ratio{job="demo", node="node-b"}') == "node-b"
    assert entity_of('app_build_info{subservice="x", job="demo"}') == ""
