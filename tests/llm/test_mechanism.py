"""The mechanism along the dependency path and the template note built from it."""

from __future__ import annotations

from typing import Any

from plugin_backend.llm.mechanism import (
    effect_phrase,
    first_check,
    hops,
    impact_path,
    template_note,
)

# frontend needs checkout, checkout needs postgres and redis (what needs each entity):
DEPENDENTS = {"postgres": {"checkout"}, "redis": {"checkout"}, "checkout": {"frontend"}}


def dependents(entity: str) -> set[str]:
    return DEPENDENTS.get(entity, set())


def _item(metric: str, entity: str, direction: str, before: float, after: float) -> dict[str, Any]:
    return {
        "series": f'{metric}{{service="{entity}"}}',
        "metric": metric,
        "labels": {"__name__": metric, "service": entity},
        "entity": entity,
        "evidence": {
            "kind": "metric",
            "direction": direction,
            "baseline": before,
            "incident_value": after,
        },
    }


def pool_report(path: list[str] | None = None, from_map: bool = True) -> dict[str, Any]:
    """postgres' pool fills 4 min before frontend's p99 rises; checkout slows 2 min before."""
    pool = {**_item("pg_connections_in_use", "postgres", "up", 9, 20), "lead_s": 240.0}
    slow = {**_item("http_latency_seconds", "checkout", "up", 0.1, 0.9), "lead_s": 120.0}
    pool["onset"], slow["onset"] = 1000.0, 1120.0
    symptom = _item("http_request_duration_seconds_p99", "frontend", "up", 0.2, 1.4)
    report: dict[str, Any] = {"symptom": symptom, "causes": [pool, slow]}
    if path is not None:
        report["path"], report["path_from_map"] = path, from_map
    return report


def test_impact_path_follows_what_needs_each_entity() -> None:
    assert impact_path("postgres", "frontend", dependents) == ["postgres", "checkout", "frontend"]
    assert impact_path("frontend", "frontend", dependents) == ["frontend"]
    assert impact_path("frontend", "postgres", dependents) is None  # against the impact
    assert impact_path("postgres", "redis", dependents) is None  # siblings: no path


def test_the_template_note_states_the_mechanism_along_the_path_and_a_first_check() -> None:
    note = template_note(pool_report(["postgres", "checkout", "frontend"]))
    mechanism, check = note.split(". First check ")
    assert mechanism.startswith("Likely mechanism (along the dependency map): postgres")
    # cause -> middle hop (shown by its own evidence) -> the symptom, in that order
    at = [mechanism.index(e) for e in ("postgres", "checkout", "frontend")]
    assert at == sorted(at)
    assert "connections piled up" in mechanism
    assert "9 -> 20, 4 min before the symptom" in mechanism
    assert "checkout slowed down" in mechanism
    assert "frontend slowed down (the symptom" in mechanism
    assert check.startswith('pg_connections_in_use{service="postgres"}: it moved 4 min before')
    assert "and 1 other change followed it" in check
    assert 2 <= note.count(". ") + 1 <= 4


def test_without_a_path_the_cause_leads_straight_to_the_symptom() -> None:
    note = template_note(pool_report())
    assert "(no dependency map)" in note
    assert "checkout" not in note.split("First check")[0].replace("pg_", "")  # no middle hop
    assert [h.entity for h in hops(pool_report())] == ["postgres", "frontend"]


def test_the_template_names_only_what_the_report_holds() -> None:
    report = pool_report(["postgres", "checkout", "frontend"])
    note = template_note(report)
    for stranger in ("redis", "payments", "node-a"):
        assert stranger not in note


def test_a_deploy_says_to_compare_versions() -> None:
    deploy: dict[str, Any] = {
        "series": 'app_build_info{service="checkout", version="2.1"}',
        "metric": "app_build_info",
        "labels": {"service": "checkout", "version": "2.1"},
        "entity": "checkout",
        "lead_s": 60.0,
        "evidence": {"kind": "change_event", "event": "appeared"},
    }
    report = {**pool_report(), "causes": [deploy]}
    assert effect_phrase("app_build_info", deploy["evidence"]) == "was deployed"
    check = first_check(report)
    assert check is not None
    assert check[0] == deploy["series"]
    assert "last good version" in check[1]
    assert template_note(report).startswith("Likely mechanism (no dependency map): checkout was")


def test_no_causes_no_mechanism() -> None:
    note = template_note({**pool_report(), "causes": []})
    assert note.startswith("No candidate series changed before")


def test_a_map_that_links_cause_and_symptom_by_no_path_says_so() -> None:
    note = template_note(pool_report(["postgres", "frontend"], from_map=False))
    assert note.startswith("Likely mechanism (the dependency map links them by no path): ")


def test_what_a_series_counts_comes_from_its_labels_or_its_query() -> None:
    up = {"kind": "metric", "direction": "up"}
    errors = _item("http_server_requests_total", "gateway", "up", 0.1, 3.0)
    errors["labels"]["code"] = "5xx"
    requests = _item("http_server_requests_total", "gateway", "up", 100, 300)
    assert hops({"causes": [errors], "symptom": {}})[0].effect == "errors rose"
    assert hops({"causes": [requests], "symptom": {}})[0].effect == "load rose"
    query = 'rate(http_server_requests_total{code="5xx"}[2m])'
    symptom = {"query": query, "series": "{}", "evidence": up}  # a rate has no name
    assert hops({"causes": [requests], "symptom": symptom})[-1].phrase == (
        "http_server_requests_total errors rose"
    )
    assert effect_phrase("cache_client_requests_total", up, ["miss"]) == "misses rose"
