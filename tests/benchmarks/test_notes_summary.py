"""The notes benchmark's rules (benchmarks.bench_notes.grade): the true root cause
named first, nothing outside the evidence, a path consistent with the map, a first
check with its reason; and the per-source cells."""

from __future__ import annotations

from typing import Any

from benchmarks.bench_notes import GRADE_HEADER, Grade, grade, grade_cells
from plugin_backend.llm.mechanism import template_note
from plugin_backend.rca.dependencies import load_dependency_map

DEPS = load_dependency_map(
    {
        "services": {
            "frontend": {"depends_on": ["checkout"]},
            "checkout": {"depends_on": ["postgres", "redis"]},
            "postgres": {},
            "redis": {},
        }
    }
)
ENTITIES = set(DEPS.entities)
METRICS = {"pg_connections_in_use", "http_p99_seconds", "redis_hit_ratio", "checkout_cpu"}


def _item(metric: str, entity: str) -> dict[str, Any]:
    return {
        "series": f'{metric}{{service="{entity}"}}',
        "metric": metric,
        "labels": {"__name__": metric, "service": entity},
        "entity": entity,
        "lead_s": 240.0,
        "evidence": {"kind": "metric", "direction": "up", "baseline": 9, "incident_value": 20},
    }


REPORT: dict[str, Any] = {
    "symptom": _item("http_p99_seconds", "frontend"),
    "causes": [_item("pg_connections_in_use", "postgres")],
    "path": ["postgres", "checkout", "frontend"],
    "path_from_map": True,
}


def _grade(text: str, root: str = "postgres") -> Grade:
    return grade(
        text, REPORT, root_entity=root, entities=ENTITIES, metrics=METRICS, dependencies=DEPS
    )


def test_the_template_note_passes_every_rule() -> None:
    assert _grade(template_note(REPORT)) == Grade(True, True, True, True)


def test_the_symptom_named_first_is_not_the_root_first() -> None:
    text = "Frontend slowed down because postgres connections piled up."
    found = _grade(text)
    assert not found.root_first
    assert not found.path_ok  # frontend does not flow to postgres
    assert not found.check


def test_naming_an_entity_or_metric_outside_the_evidence_is_caught() -> None:
    assert not _grade("Postgres connections piled up after redis failed.").inside
    assert not _grade("Postgres piled up; checkout_cpu rose; frontend slowed.").inside
    assert _grade("Postgres connections piled up, so checkout and frontend slowed.").inside


def test_a_path_must_follow_the_map_and_reach_the_symptom() -> None:
    assert _grade("Postgres filled, checkout slowed, frontend slowed.").path_ok
    assert not _grade("Postgres connections piled up.").path_ok  # never reaches frontend
    assert not _grade("Checkout slowed, then postgres filled, then frontend.").path_ok


def test_a_first_check_needs_an_evidence_name_and_a_reason() -> None:
    assert _grade("Postgres filled. First check pg_connections_in_use: it moved first.").check
    assert not _grade("Postgres filled. First check pg_connections_in_use.").check
    assert not _grade("Postgres filled. Check the database: it moved first.").check


def test_cells_count_each_rule_and_leave_unjudged_paths_out() -> None:
    grades = [Grade(True, True, True, True), Grade(False, True, None, False)]
    cells = dict(zip(GRADE_HEADER, grade_cells(grades), strict=True))
    assert cells == {
        "n": "2",
        "root first": "1/2",
        "inside evidence": "2/2",
        "path ok": "1/1",
        "first check": "1/2",
    }


def test_load_may_flow_from_callers_but_a_path_keeps_one_direction() -> None:
    surge = {**REPORT, "symptom": _item("pg_connections_in_use", "postgres")}

    def path_ok(text: str) -> bool | None:
        return grade(
            text,
            surge,
            root_entity="frontend",
            entities=ENTITIES,
            metrics=METRICS,
            dependencies=DEPS,
        ).path_ok

    assert path_ok("Frontend load rose, checkout called postgres more, postgres filled.")
    assert not path_ok("Checkout slowed, frontend load rose, postgres filled.")


def test_a_longer_name_is_one_mention() -> None:
    deps = load_dependency_map({"services": {"f_AWS::Lambda::Function": {}, "f_AWS::Lambda": {}}})
    found = grade(
        "f_AWS::Lambda::Function slowed down.",
        REPORT,
        root_entity="f_AWS::Lambda::Function",
        entities=set(deps.entities),
        metrics=set(),
        dependencies=deps,
    )
    assert found.root_first


def test_names_that_differ_only_in_case_grade_as_the_one_written() -> None:
    # PetShop's map has both "Servi-searc..._remote" and "servi-searc..._remote": a note
    # naming the evidence's spelling is inside, whatever order the set of names has.
    spellings = {
        "".join(c.upper() if mask >> i & 1 else c for i, c in enumerate("lb-x"))
        for mask in range(16)
    }
    evidence_spelling = "lb-x"
    report = {
        **REPORT,
        "causes": [_item("pg_connections_in_use", evidence_spelling)],
        "path": [evidence_spelling, "frontend"],
    }
    found = grade(
        "The lb-x slowed down, which slowed down frontend.",
        report,
        root_entity=evidence_spelling,
        entities=ENTITIES | spellings,
        metrics=METRICS,
        dependencies=DEPS,
    )
    assert found.inside
    assert found.outside == ()
    assert found.root_first
    # the other spelling written out is another entity of the estate, outside
    other = grade(
        "The LB-X slowed down, which slowed down frontend.",
        report,
        root_entity=evidence_spelling,
        entities=ENTITIES | spellings,
        metrics=METRICS,
        dependencies=DEPS,
    )
    assert other.outside == ("LB-X",)
    assert not other.root_first


def test_the_names_outside_the_evidence_are_reported() -> None:
    found = _grade("Postgres connections piled up after redis failed; checkout_cpu rose.")
    assert found.outside == ("redis", "checkout_cpu")
