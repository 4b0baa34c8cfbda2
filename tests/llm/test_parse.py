"""Strict parsing of the model's note against the evidence."""

from __future__ import annotations

import json
from typing import Any

import pytest

from plugin_backend.errors import LLMError
from plugin_backend.llm.parse import Note, NoteRejected, parse_note

ALLOWED = {
    'pg_connections{service="postgres"}',
    "pg_connections",
    "postgres",
    'http_latency_seconds{service="checkout"}',
    "http_latency_seconds",
    "checkout",
    'node_cpu{instance="10.0.0.1:9100", node="node-b"}',
    "node-b",
}
CAUSES = {'pg_connections{service="postgres"}', "pg_connections", "postgres"}


def answer(**fields: Any) -> str:
    base: dict[str, Any] = {
        "cause": 'pg_connections{service="postgres"}',
        "chain": ["postgres", "checkout"],
        "note": "Postgres connections rose 4 minutes before checkout latency; "
        "the database slowed the checkout service.",
        "first_check": 'pg_connections{service="postgres"}',
    }
    base.update(fields)
    return json.dumps(base)


def test_a_good_answer_parses() -> None:
    note = parse_note(answer(), ALLOWED, cause_names=CAUSES)
    assert note == Note(
        cause='pg_connections{service="postgres"}',
        chain=("postgres", "checkout"),
        note="Postgres connections rose 4 minutes before checkout latency; "
        "the database slowed the checkout service.",
        first_check='pg_connections{service="postgres"}',
    )


def test_answer_in_prose_and_code_fence() -> None:
    text = f"Sure! Here is the note:\n```json\n{answer()}\n```\nHope this helps {{:}}"
    assert parse_note(text, ALLOWED).cause == 'pg_connections{service="postgres"}'


def test_series_mentions_in_the_note_may_use_a_label_subset() -> None:
    note = 'node_cpu{node="node-b"} dropped after http_latency_seconds{service="checkout"} rose.'
    assert parse_note(answer(note=note), ALLOWED).note == note
    metric_only = "pg_connections rose before http_latency_seconds."
    assert parse_note(answer(note=metric_only), ALLOWED).note == metric_only


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty answer"),
        ("The cause is postgres.", "no JSON object"),
        ('{"cause": "postgres", "chain": [', "no JSON object"),
        ("[1, 2]", "no JSON object"),
        (answer(chain="postgres"), "schema"),
        (answer(cause=None), "schema"),
        (answer(note=""), "schema"),
        (answer(chain=["postgres"] * 7), "schema"),
        ('{"cause": "postgres"}', "schema"),
        (answer(cause="X"), "cause 'X' is not a cause"),
        (answer(cause="checkout"), "cause 'checkout' is not a cause"),
        (answer(cause='redis_memory{service="redis"}'), "is not a cause"),
        (answer(chain=["redis", "checkout"]), "chain entry 'redis'"),
        (answer(first_check="disk_io_seconds"), "first_check 'disk_io_seconds'"),
        (answer(note='redis_memory{service="redis"} filled up.'), "names a series not in"),
        (answer(note='pg_connections{service="redis"} rose.'), "names a series not in"),
        (answer(note="kafka_consumer_lag grew first."), "'kafka_consumer_lag'"),
        (answer(note='The "X" service failed.'), "quotes a name"),
        (answer(note="One. Two. Three. Four."), "4 sentences"),
        (answer(note=" ".join(["word"] * 61)), "61 words"),
    ],
)
def test_rejections_name_the_reason(text: str, reason: str) -> None:
    with pytest.raises(NoteRejected) as caught:
        parse_note(text, ALLOWED, cause_names=CAUSES)
    assert reason in caught.value.reason
    assert isinstance(caught.value, LLMError)
    assert caught.value.code == "llm_note_rejected"


def test_known_entities_outside_the_evidence_are_rejected() -> None:
    text = answer(note="Postgres, not redis, slowed checkout.")
    with pytest.raises(NoteRejected, match="'redis'"):
        parse_note(text, ALLOWED, known_names={"redis", "postgres"})
    assert parse_note(answer(), ALLOWED, known_names={"redis", "postgres"})


def test_extra_keys_are_ignored_and_whitespace_normalised() -> None:
    text = answer(confidence=0.9, cause="  postgres ", first_check="pg_connections")
    note = parse_note(text, ALLOWED)
    assert note.cause == "postgres"
    assert note.first_check == "pg_connections"


def test_huge_answers_are_rejected() -> None:
    with pytest.raises(NoteRejected, match="too long"):
        parse_note("x" * 30_000 + answer(), ALLOWED)


def test_v2_answers_give_the_cause_by_line_number() -> None:
    from plugin_backend.llm.parse import NoteRejected, parse_note

    numbered = ['pg_connections_in_use{service="postgres"}', 'redis_hit_ratio{service="redis"}']
    allowed = {*numbered, "pg_connections_in_use", "postgres", "checkout", "redis_hit_ratio"}
    note = parse_note(
        '{"cause": 1, "note": "postgres ran out of connections, slowing checkout."}',
        allowed,
        numbered=numbered,
    )
    assert note.cause == numbered[0]
    assert note.first_check == numbered[0]
    import pytest

    with pytest.raises(NoteRejected, match="not a line"):
        parse_note('{"cause": 3, "note": "x"}', allowed, numbered=numbered)
    with pytest.raises(NoteRejected):
        parse_note('{"cause": 1, "note": "kafka_lag caused it"}', allowed, numbered=numbered)


def test_v2_answer_with_unescaped_quotes_is_repaired_then_checked() -> None:
    from plugin_backend.llm.parse import NoteRejected, parse_note

    numbered = ['app_build_info{service="checkout", version="v2"}']
    allowed = {*numbered, "app_build_info", "checkout"}
    text = (
        '{"cause": 1, "note": "app_build_info{service="checkout", version="v2"} '
        'appeared before errors rose"}'
    )
    note = parse_note(text, allowed, numbered=numbered)
    assert note.cause == numbered[0]
    assert "appeared before errors rose" in note.note
    invented = '{"cause": 1, "note": "kafka_lag{topic="x"} caused it"}'
    import pytest

    with pytest.raises(NoteRejected):
        parse_note(invented, allowed, numbered=numbered)


# --- plain-sentence answers (prompts with ``answer: text``) -------------------

CAUSE = 'pg_connections{service="postgres"}'
TERMS = {CAUSE, "pg_connections", "postgres"}


def text_note(text: str, *, known: set[str] | None = None, truncated: bool = False) -> Note:
    from plugin_backend.llm.parse import parse_text_note

    return parse_text_note(
        text,
        ALLOWED,
        cause=CAUSE,
        cause_terms=TERMS,
        known_names=known or set(),
        chain=("postgres", "checkout"),
        truncated=truncated,
    )


def test_a_plain_sentence_naming_the_cause_is_a_note() -> None:
    note = text_note("Postgres connections piled up, so checkout requests queued and slowed")
    assert note.note == "Postgres connections piled up, so checkout requests queued and slowed."
    assert (note.cause, note.first_check, note.chain) == (CAUSE, CAUSE, ("postgres", "checkout"))


def test_a_sentence_naming_a_service_outside_the_evidence_is_rejected() -> None:
    known = {"postgres", "checkout", "redis", "payments"}
    with pytest.raises(NoteRejected, match="redis"):
        text_note("Postgres connections piled up after redis failed.", known=known)
    with pytest.raises(NoteRejected, match="payment_errors_total"):
        text_note("Postgres connections piled up and payment_errors_total rose.")


def test_a_sentence_that_does_not_name_the_cause_is_rejected() -> None:
    with pytest.raises(NoteRejected, match="does not name the cause"):
        text_note("Checkout slowed down.")


def test_a_cut_off_answer_keeps_its_complete_sentences_only() -> None:
    cut = "Postgres connections piled up. Then checkout requests queued and the fron"
    assert text_note(cut, truncated=True).note == "Postgres connections piled up."
    with pytest.raises(NoteRejected, match="cut off"):
        text_note("Postgres connections piled up and checkout requests", truncated=True)


def test_a_sentence_wrapped_in_a_json_note_is_read_from_it() -> None:
    wrapped = json.dumps({"cause": 1, "note": "Postgres connections piled up."})
    assert text_note(wrapped).note == "Postgres connections piled up."


def test_an_entity_differing_from_the_evidence_only_in_case_is_another_entity() -> None:
    # PetShop's call graph holds both spellings, two different nodes.
    lower, upper = "search.elb_remote", "Search.elb_remote"
    allowed = {*ALLOWED, lower, f'latency_seconds{{service="{lower}"}}'}
    known = {lower, upper, "postgres"}
    named_lower = answer(note=f"The {lower} slowed down, which slowed checkout.")
    assert parse_note(named_lower, allowed, known_names=known)
    named_upper = answer(note=f"The {upper} slowed down, which slowed checkout.")
    with pytest.raises(NoteRejected, match="differing from it in case"):
        parse_note(named_upper, allowed, known_names=known)
    # Without a second entity so spelled, a capital is only a capital.
    capital = answer(note="Postgres connections rose; the database slowed checkout.")
    assert parse_note(capital, ALLOWED, known_names={"postgres", "redis"})
