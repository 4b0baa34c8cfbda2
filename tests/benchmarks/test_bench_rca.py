"""The RCA benchmark's grading: entity-level hits, exact-series hits, AC@k and Avg@5."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import petshop
from benchmarks.bench_rca import RANKERS, Tally, first_hit, petshop_source
from benchmarks.rca_case import RcaCase
from plugin_backend.types import Series

CASE = RcaCase(
    source="t",
    fault="f",
    name="c",
    noticed_s=3600.0,
    symptom_series='lat{service="gateway"}',
    root_cause_entity="orders",
    root_cause_series='cpu{pod="orders-0", service="orders"}',
    step_s=30.0,
    lookback_s=3600.0,
)


def test_a_series_of_the_root_entity_is_an_entity_hit_but_not_an_exact_one() -> None:
    ranked = [
        ('mem{node="host-a"}', {"node": "host-a"}),
        ('lat{service="orders"}', {"service": "orders"}),
        ('cpu{pod="orders-0", service="orders"}', {"service": "orders", "pod": "orders-0"}),
    ]
    assert first_hit(ranked, CASE) == 2
    assert first_hit(ranked, CASE, strict=True) == 3
    assert first_hit(ranked[:1], CASE) is None
    far = [('x{service="a"}', {"service": "a"})] * 5 + ranked[1:]
    assert first_hit(far, CASE) is None  # beyond the top 5


def test_ac_at_k_and_avg5() -> None:
    tally = Tally(hits=[1, 3, None, 5], strict=[1, None, None, None])
    assert tally.ac(1) == 0.25
    assert tally.ac(3) == 0.5
    assert tally.avg5() == (0.25 + 0.25 + 0.5 + 0.5 + 0.75) / 5
    assert tally.strict1() == 0.25
    assert Tally(hits=[1], strict=[None], has_series=False).cells()[-1] == "n/a"


def test_every_registered_ranker_ranks_the_one_jump_first() -> None:
    ts = np.arange(0.0, 3601.0, 30.0)
    rng = np.random.default_rng(0)
    flat = 1.0 + 0.01 * rng.standard_normal(ts.size)
    jump = flat + 5.0 * (ts >= 3000)
    symptom = Series({"__name__": "lat", "service": "gateway"}, ts, flat + 3.0 * (ts >= 3100))
    candidates = [
        Series({"__name__": "cpu", "service": "orders"}, ts, jump),
        Series({"__name__": "cpu", "service": "search"}, ts, flat.copy()),
        Series({"__name__": "mem", "service": "search"}, ts, flat[::-1].copy()),
    ]
    for name, ranker, _ in RANKERS:
        ranked = ranker(symptom, candidates, 3600.0, None)
        assert ranked, name
        assert ranked[0][1]["service"] == "orders", name


def test_petshop_is_skipped_with_a_message_without_the_dataset(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(petshop, "dataset_available", lambda: False)
    assert petshop_source("end") is None
    assert "petshop: skipped" in capsys.readouterr().out
