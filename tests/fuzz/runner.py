"""Drive schemathesis over every operation of a schema with hypothesis, deterministically.

(schemathesis' pytest integration with a lazily built schema does not run under this
pytest; a plain loop also lets one test report every operation's failure at once.)
Each operation gets its documented examples, then ``max_examples`` positive and
``max_examples`` negative cases (data that violates the schema), seeded by
``derandomize``: CI sees the same cases every run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case
from schemathesis.generation import GenerationMode

__all__ = ["FuzzReport", "fuzz_schema"]

Call = Callable[[Case], Any]
Check = Callable[[Case, Any], None]


@dataclass
class FuzzReport:
    operations: int = 0
    cases: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    by_operation: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.operations} operations, {self.cases} cases ({_codes(self.statuses)})"]
        lines += [f"  {label}: {_codes(codes)}" for label, codes in self.by_operation.items()]
        return "\n".join(lines)


def _codes(counts: Counter[str]) -> str:
    return ", ".join(f"{code}: {n}" for code, n in sorted(counts.items()))


def fuzz_schema(
    schema: Any,
    call: Call,
    check: Check,
    *,
    max_examples: int,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
    examples: bool = True,
) -> FuzzReport:
    """``call`` every operation of ``schema`` with generated cases and ``check`` each
    answer; the first failure of each operation and mode is kept (shrunk by hypothesis)."""
    report = FuzzReport()
    for result in schema.get_all_operations():
        operation = result.ok()
        report.operations += 1
        label = f"{operation.method.upper()} {operation.path}"
        strategies: list[tuple[str, Any, int]] = []
        if examples:
            from_examples = operation.get_strategies_from_examples()
            if from_examples:
                strategies.append(("examples", st.one_of(from_examples), 3 * len(from_examples)))
        strategies += [
            (mode.value, operation.as_strategy(generation_mode=mode), max_examples)
            for mode in modes
        ]
        statuses = report.by_operation.setdefault(label, Counter())
        for name, strategy, count in strategies:
            try:
                _run(strategy, count, call, check, report, statuses)
            except Unsatisfiable:  # nothing to negate: no parameters, no body
                continue
            except (Exception, BaseExceptionGroup) as exc:  # reported together at the end
                report.failures.append(f"{label} [{name}]: {exc}")
    return report


def _run(
    strategy: Any,
    count: int,
    call: Call,
    check: Check,
    report: FuzzReport,
    statuses: Counter[str],
) -> None:
    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def run(case: Case) -> None:
        response = call(case)
        report.cases += 1
        report.statuses[str(response.status_code)] += 1
        statuses[str(response.status_code)] += 1
        check(case, response)

    run()
