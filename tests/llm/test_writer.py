"""NoteWriter: the LLM's note when it passes, the template otherwise."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from plugin_backend.errors import LLMError
from plugin_backend.llm.port import LLM, Completion, Message
from plugin_backend.llm.prompting import load_prompt
from plugin_backend.llm.writer import NoteWriter

REPORT: dict[str, Any] = {
    "symptom": {
        "series": 'http_latency_seconds{service="checkout"}',
        "labels": {"__name__": "http_latency_seconds", "service": "checkout"},
        "evidence": {"kind": "metric", "direction": "up", "baseline": 0.1, "incident_value": 1},
    },
    "causes": [
        {
            "series": 'pg_connections{service="postgres"}',
            "metric": "pg_connections",
            "labels": {"__name__": "pg_connections", "service": "postgres"},
            "score": 0.9,
            "lead_s": 240.0,
            "entity": "postgres",
            "evidence": {"kind": "metric", "direction": "up", "baseline": 20, "incident_value": 95},
        }
    ],
    "summary": "TEMPLATE NOTE",
}
GOOD = json.dumps(
    {
        "cause": "postgres",
        "chain": ["postgres", "checkout"],
        "note": "Postgres connections rose 4 minutes before checkout latency",
        "first_check": 'pg_connections{service="postgres"}',
    }
)


class FakeLLM:
    name = "fake"
    model = "tiny"

    def __init__(self, answer: str | Exception) -> None:
        self.answer = answer
        self.calls: list[tuple[list[Message], int, float]] = []

    def complete(
        self, messages: Sequence[Message], *, max_tokens: int, timeout_s: float
    ) -> Completion:
        self.calls.append((list(messages), max_tokens, timeout_s))
        if isinstance(self.answer, Exception):
            raise self.answer
        return Completion(self.answer, prompt_tokens=120, completion_tokens=40)


def _writer(llm: LLM | None) -> tuple[NoteWriter, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    writer = NoteWriter(
        llm,
        lambda report: str(report["summary"]),
        observer=lambda event, _latency, info: events.append((event, info)),
        prompt=load_prompt("note_v3"),  # JSON answers: cause, chain, note, first_check
        timeout_s=3.0,
    )
    return writer, events


def test_a_good_note_is_used() -> None:
    llm = FakeLLM(GOOD)
    writer, events = _writer(llm)
    written = writer.write(REPORT)
    assert written.text == (
        "Postgres connections rose 4 minutes before checkout latency. "
        'First check pg_connections{service="postgres"}: it moved 4 min before the symptom.'
    )
    assert not written.fallback
    assert written.reason is None
    assert (written.provider, written.model) == ("fake", "tiny")
    assert (written.prompt_tokens, written.completion_tokens) == (120, 40)
    assert written.note is not None
    assert written.note.chain == ("postgres", "checkout")
    assert [e for e, _ in events] == ["call"]
    assert events[0][1]["prompt_tokens"] == 120
    _messages, max_tokens, timeout_s = llm.calls[0]
    assert (max_tokens, timeout_s) == (load_prompt("note_v3").max_tokens, 3.0)
    assert written.to_dict()["fallback"] is False


def test_no_llm_uses_the_template() -> None:
    writer, events = _writer(None)
    written = writer.write(REPORT)
    assert (written.text, written.fallback, written.reason) == (
        "TEMPLATE NOTE",
        True,
        "no LLM configured",
    )
    assert (written.provider, written.model) == ("none", None)
    assert events == [
        (
            "fallback",
            {
                "provider": "none",
                "model": None,
                "reason": "no LLM configured",
                "kind": "no_llm",
            },
        )
    ]


def test_no_causes_skip_the_llm() -> None:
    llm = FakeLLM(GOOD)
    writer, _ = _writer(llm)
    written = writer.write({**REPORT, "causes": []})
    assert written.fallback
    assert not llm.calls


def test_an_invented_cause_falls_back_and_is_counted() -> None:
    invented = GOOD.replace('"cause": "postgres"', '"cause": "redis"')
    writer, events = _writer(FakeLLM(invented))
    written = writer.write(REPORT)
    assert written.text == "TEMPLATE NOTE"
    assert written.fallback
    assert written.reason is not None
    assert "redis" in written.reason
    assert [e for e, _ in events] == ["call", "rejected", "fallback"]
    assert events[-1][1]["kind"] == "rejected"


def test_llm_errors_and_surprises_fall_back() -> None:
    for error in (LLMError("LLM at x did not answer within 0.3s"), RuntimeError("boom")):
        writer, events = _writer(FakeLLM(error))
        written = writer.write(REPORT)
        assert written.fallback
        assert written.text == "TEMPLATE NOTE"
        assert written.reason is not None
        assert written.reason.startswith("LLM failed")
        assert [e for e, _ in events] == ["failure", "fallback"]


def test_a_failing_observer_does_not_break_the_note() -> None:
    def observer(event: str, latency: float, info: dict[str, Any]) -> None:
        raise RuntimeError("metrics down")

    written = NoteWriter(FakeLLM(SENTENCE), observer=observer).write(REPORT)
    assert not written.fallback


def test_default_fallback_is_the_report_summary() -> None:
    assert NoteWriter(None).write(REPORT).text == "TEMPLATE NOTE"


# --- the default prompt: one plain sentence on the path ----------------------

SENTENCE = "Postgres connections piled up, so checkout requests queued and its latency rose."


def _v4_writer(llm: LLM) -> tuple[NoteWriter, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    writer = NoteWriter(
        llm,
        lambda report: str(report["summary"]),
        observer=lambda event, _latency, info: events.append((event, info)),
        timeout_s=3.0,
    )
    return writer, events


def test_the_models_sentence_is_the_mechanism_and_the_service_adds_the_first_check() -> None:
    writer, events = _v4_writer(FakeLLM(SENTENCE))
    written = writer.write({**REPORT, "path": ["postgres", "checkout"], "path_from_map": True})
    assert not written.fallback
    assert written.text == (
        f'{SENTENCE} First check pg_connections{{service="postgres"}}: '
        "it moved 4 min before the symptom."
    )
    assert written.note is not None
    assert written.note.chain == ("postgres", "checkout")
    assert [e for e, _ in events] == ["call"]


def test_a_sentence_naming_a_known_service_outside_the_evidence_falls_back_counted() -> None:
    writer, events = _v4_writer(FakeLLM("Postgres connections piled up because redis failed."))
    written = writer.write(REPORT, known_names={"postgres", "checkout", "redis"})
    assert written.fallback
    assert written.text == "TEMPLATE NOTE"
    assert written.reason is not None
    assert "redis" in written.reason
    assert [e for e, _ in events] == ["call", "rejected", "fallback"]
    assert events[-1][1]["kind"] == "rejected"
    # a sentence copying the prompt's worked example is caught the same way
    copied = _v4_writer(FakeLLM("Postgres connections piled up and svc-c slowed down."))[0]
    assert copied.write(REPORT).fallback
    # the same sentence passes where the service knows no redis: nothing to enforce
    assert not _v4_writer(FakeLLM("Postgres connections piled up."))[0].write(REPORT).fallback


def test_a_sentence_that_stops_before_the_symptom_falls_back() -> None:
    report = {**REPORT, "symptom": {**REPORT["symptom"], "entity": "checkout"}}
    writer, events = _v4_writer(FakeLLM("Postgres connections piled up, which slowed down."))
    written = writer.write(report)
    assert written.fallback
    assert written.reason == "note rejected: note does not reach the symptom"
    assert [e for e, _ in events] == ["call", "rejected", "fallback"]
    assert not _v4_writer(FakeLLM(SENTENCE))[0].write(report).fallback
