"""The load generator's schedule (benchmarks.load), on a clock the test moves: latency
counts from each request's due time, so a server that falls behind shows as growing
latency and a lower achieved rate, never as a lower offered rate."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import pytest

from benchmarks.load import due_offsets, run_open_loop


class FakeClock:
    """Time moves only when the generator sleeps or a request takes its service time
    (every value below is exact in binary)."""

    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class OneThread(Executor):
    """Runs each request at once, in the caller: a pool of one thread that the
    generator must wait for, as a saturated pool makes it."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _server(
    clock: FakeClock, service_s: float, answers: list[str | None] | None = None
) -> Callable[[], str | None]:
    """A send() whose every answer takes ``service_s``, OK or the next of ``answers``."""
    pending = list(answers or [])

    def send() -> str | None:
        clock.t += service_s
        return pending.pop(0) if pending else None

    return send


def test_requests_are_due_every_interval_within_the_window() -> None:
    assert due_offsets(4, 2.5) == [0.25 * n for n in range(10)]
    assert due_offsets(50, 4) == pytest.approx([n / 50 for n in range(200)])
    assert len(due_offsets(3, 1.5)) == 5  # 0, 1/3, 2/3, 1, 4/3: all before 1.5 s
    with pytest.raises(ValueError):
        due_offsets(0, 10)


def test_a_server_that_keeps_up_is_measured_at_its_service_time() -> None:
    clock = FakeClock()
    result = run_open_loop(
        _server(clock, 0.0625), rate_per_s=4, duration_s=2.5, clock=clock, executor=OneThread()
    )
    assert result.sent == 10
    assert result.latencies_s == [0.0625] * 10
    assert clock.sleeps == [0.1875] * 9  # the generator waits for each due time
    assert result.max_start_delay_s == 0.0
    assert result.achieved_rps == 4.0 == result.offered_rps
    assert result.errors == {}


def test_a_slow_server_shows_as_queueing_latency_not_as_a_lower_offered_rate() -> None:
    # Each answer takes 0.5 s, requests are due every 0.25 s: request k is due at
    # 0.25 k but answered at 0.5 (k + 1), so it waited 0.25 k for the one before it.
    # A closed-loop timer (clock started when the request left) would say 0.5 s for all.
    clock = FakeClock()
    result = run_open_loop(
        _server(clock, 0.5), rate_per_s=4, duration_s=2.5, clock=clock, executor=OneThread()
    )
    assert result.sent == 10  # all of them, late: the schedule did not slow down
    assert clock.sleeps == []
    assert result.latencies_s == [0.5 + 0.25 * k for k in range(10)]
    assert result.max_start_delay_s == 4.5 - 2.25  # the last one, due at 2.25, left at 4.5
    assert result.last_answer_s == 5.0
    assert result.achieved_rps == 2.0  # 10 answers in 5 s, against 4 offered


def test_errors_and_failed_checks_are_counted_by_kind_and_none_is_lost() -> None:
    clock = FakeClock()
    send = _server(clock, 0.0625, [None, "HTTP 500", None, "failed check"])

    def sometimes_raises() -> str | None:
        if clock.t >= 101.0:  # from the fifth request on: a check that raises
            raise ValueError("not JSON")
        return send()

    result = run_open_loop(
        sometimes_raises, rate_per_s=4, duration_s=2, clock=clock, executor=OneThread()
    )
    assert result.sent == 8
    assert result.errors == {"HTTP 500": 1, "failed check": 1, "ValueError": 4}
    assert len(result.latencies_s) == 2
    assert result.sent == len(result.latencies_s) + result.error_count
    assert result.achieved_rps == 1.0  # 2 OK answers over the 2 s window
