"""explain's note on the demo estate with its dependency map: the mechanism along the
map's path from the top cause to the symptom, the first check, and a model's note
that names an entity of the estate outside the evidence replaced by the template."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from plugin_backend.adapters.demo import DemoSource
from plugin_backend.explain import ExplainService
from plugin_backend.llm.mechanism import impact_path
from plugin_backend.llm.port import Completion, Message
from plugin_backend.llm.writer import NoteWriter
from plugin_backend.rca.dependencies import load_dependency_map
from tests.demo_faults import demo_fault_start

DEPS = load_dependency_map(
    yaml.safe_load((Path(__file__).parents[2] / "deploy" / "dependencies.yaml").read_text())
)
SYMPTOM = 'http_request_duration_seconds_p99{service="frontend"}'
AT_S = demo_fault_start("pg_pool_exhaustion") + 600


class ScriptedLLM:
    name = "scripted"
    model = "script"

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.prompts: list[str] = []

    def complete(
        self, messages: Sequence[Message], *, max_tokens: int, timeout_s: float
    ) -> Completion:
        self.prompts.append(messages[-1]["content"])
        return Completion(self.answer, prompt_tokens=90, completion_tokens=max_tokens // 2)


def _explain(writer: NoteWriter | None = None) -> Any:
    service = ExplainService(DemoSource(seed=7), dependencies=DEPS, writer=writer)
    return service.explain(SYMPTOM, AT_S)


def test_the_template_note_follows_the_map_from_the_top_cause_and_says_what_to_check() -> None:
    report = _explain()
    top = report.causes[0]
    assert top.entity is not None
    path = impact_path(top.entity, "frontend", DEPS.dependents)
    assert path is not None
    note = report.summary
    mechanism, check = note.split(" First check ")
    assert mechanism.startswith(f"Likely mechanism (along the dependency map): {top.entity} ")
    at = [mechanism.index(entity) for entity in path]
    assert at == sorted(at)  # cause, hops, symptom: in the map's order
    assert "-> frontend slowed down (the symptom, http_request_duration_seconds_p99 " in mechanism
    assert check.startswith(f"{top.series}: it ")
    assert report.llm["fallback"] is True  # no LLM: the template


def test_a_model_note_naming_an_estate_entity_outside_the_evidence_is_replaced() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    top = _explain().causes[0]
    path = impact_path(str(top.entity), "frontend", DEPS.dependents) or []
    stranger = sorted(DEPS.entities - set(path) - {"frontend"})[0]
    llm = ScriptedLLM(f"{top.entity} slowed down after {stranger} failed, and frontend followed.")
    writer = NoteWriter(llm, observer=lambda event, _s, info: events.append((event, info)))
    report = _explain(writer)
    assert llm.prompts[0].startswith(f"Path: {top.entity} ")
    assert report.llm["fallback"] is True
    assert stranger in report.llm["reason"]
    assert report.summary.startswith("Likely mechanism (along the dependency map)")
    assert [e for e, _ in events] == ["call", "rejected", "fallback"]
    # the same sentence without the stranger is the model's note, with the first check
    llm = ScriptedLLM(f"{top.entity} slowed down, and frontend followed.")
    report = _explain(NoteWriter(llm))
    assert report.llm["fallback"] is False
    assert report.summary.startswith(f"{top.entity} slowed down, and frontend followed.")
    assert f"First check {top.series}: it " in report.summary


def test_a_model_note_saying_piled_up_is_not_taken_for_prometheus_up_metric() -> None:
    # The demo estate serves Prometheus' own `up`: a plain word is no metric name.
    top = _explain().causes[0]
    sentence = f"{top.entity} connections piled up, and frontend slowed down."
    report = _explain(NoteWriter(ScriptedLLM(sentence)))
    assert report.llm["fallback"] is False, report.llm.get("reason")
    assert report.summary.startswith(sentence)
