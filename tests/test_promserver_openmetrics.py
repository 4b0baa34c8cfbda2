"""Output format of testkit.promserver.write_openmetrics (no server needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from testkit.promserver import SyntheticSeries, backfill, write_openmetrics
from tests.needs import require_binary

T0 = 1_767_225_600


def _series(labels: dict[str, str], values: list[float], *, kind: str = "gauge", step: float = 15):
    ts = T0 + step * np.arange(len(values), dtype=np.float64)
    return SyntheticSeries(labels=labels, timestamps_s=ts, values=np.array(values), kind=kind)


def _write(tmp_path: Path, series: list[SyntheticSeries]) -> str:
    path = tmp_path / "out.om"
    write_openmetrics(series, path)
    return path.read_text(encoding="utf-8")


def test_families_are_grouped_typed_once_and_the_file_ends_with_eof(tmp_path: Path) -> None:
    text = _write(
        tmp_path,
        [
            _series({"__name__": "g", "k": "a"}, [1.0, 2.5]),
            _series({"__name__": "req_total", "code": "200"}, [3.0], kind="counter"),
            _series({"__name__": "g", "k": "b"}, [-4.0]),
        ],
    )
    assert text == (
        "# TYPE g gauge\n"
        'g{k="a"} 1.0 1767225600\n'
        'g{k="a"} 2.5 1767225615\n'
        'g{k="b"} -4.0 1767225600\n'
        "# TYPE req counter\n"
        'req_total{code="200"} 3.0 1767225600\n'
        "# EOF\n"
    )


def test_label_values_are_escaped_and_labels_sorted(tmp_path: Path) -> None:
    text = _write(tmp_path, [_series({"__name__": "m", "z": "1", "a": 'back\\sl "q"\nnl'}, [1.0])])
    assert text.splitlines()[1] == 'm{a="back\\\\sl \\"q\\"\\nnl",z="1"} 1.0 1767225600'


def test_nan_and_infinities_use_openmetrics_spelling(tmp_path: Path) -> None:
    text = _write(tmp_path, [_series({"__name__": "w"}, [np.nan, np.inf, -np.inf, 1e300, 0.1])])
    values = [line.split(" ")[1] for line in text.splitlines()[1:-1]]
    assert values == ["NaN", "+Inf", "-Inf", "1e+300", "0.1"]
    assert text.splitlines()[1] == "w NaN 1767225600"


def test_fractional_timestamps_keep_milliseconds(tmp_path: Path) -> None:
    text = _write(tmp_path, [_series({"__name__": "f"}, [1.0, 2.0, 3.0], step=0.25)])
    stamps = [line.rsplit(" ", 1)[1] for line in text.splitlines()[1:-1]]
    assert stamps == ["1767225600.000", "1767225600.250", "1767225600.500"]


@pytest.mark.parametrize(
    ("labels", "ts", "values", "kind", "message"),
    [
        ({"job": "x"}, [1.0], [1.0], "gauge", "__name__"),
        ({"__name__": "bad-name"}, [1.0], [1.0], "gauge", "__name__"),
        ({"__name__": "m", "bad-label": "x"}, [1.0], [1.0], "gauge", "label name"),
        ({"__name__": "reqs"}, [1.0], [1.0], "counter", "_total"),
        ({"__name__": "m"}, [2.0, 1.0], [1.0, 1.0], "gauge", "ascending"),
        ({"__name__": "m"}, [1.0, 1.0], [1.0, 1.0], "gauge", "ascending"),
        ({"__name__": "m"}, [1.0, 2.0], [1.0], "gauge", "equal length"),
        ({"__name__": "m"}, [np.nan], [1.0], "gauge", "finite"),
    ],
)
def test_invalid_series_are_rejected(labels, ts, values, kind, message) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticSeries(labels=labels, timestamps_s=ts, values=values, kind=kind)


def test_duplicate_series_and_mixed_family_types_are_rejected(tmp_path: Path) -> None:
    a = _series({"__name__": "m", "k": "1"}, [1.0])
    with pytest.raises(ValueError, match="duplicate"):
        _write(tmp_path, [a, _series({"__name__": "m", "k": "1"}, [2.0])])
    gauge = _series({"__name__": "x"}, [1.0])
    with pytest.raises(ValueError, match="mixes"):
        _write(tmp_path, [gauge, _series({"__name__": "x_total"}, [1.0], kind="counter")])


@pytest.mark.integration
def test_promtool_accepts_the_output(tmp_path: Path) -> None:
    require_binary("promtool", "Debian package prometheus")
    om = tmp_path / "out.om"
    write_openmetrics(
        [
            _series({"__name__": "g", "k": 'q"\\\n'}, [np.nan, np.inf, -np.inf]),
            _series({"__name__": "c_total"}, [1.0, 2.0], kind="counter", step=0.5),
        ],
        om,
    )
    data = tmp_path / "data"
    backfill(om, data)
    (data / "wal").mkdir()  # `promtool tsdb dump` opens the dir as a DB
    dump = subprocess.run(
        ["promtool", "tsdb", "dump", str(data)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(dump) == 5
    assert any(line.endswith("} NaN 1767225600000") for line in dump)
    assert any(line.endswith("} +Inf 1767225615000") for line in dump)
    assert any(line.endswith("} -Inf 1767225630000") for line in dump)
    assert any(line.startswith('{__name__="c_total"} 2 1767225600500') for line in dump)
