"""Watch rules: what the worker watches and where it annotates, from a YAML file.

```yaml
rules:
  - name: checkout-latency              # unique; [a-z0-9_.-], the metrics label value
    expr: 'histogram_quantile(0.99, sum by (le) (rate(http_seconds_bucket{svc="checkout"}[5m])))'
    every: 30s                           # cycle period
    dashboard_uid: checkout-overview     # annotate this panel (both optional:
    panel_id: 2                          #   without them incidents are only stored)
    # optional, with defaults:
    step: 15s                            # resolution scored
    detector: ensemble                   # any detector name (plugin-backend score --help)
    direction: both                      # both | up | down
    sensitivity: 1                       # 2 = twice the alarms (1 per 3 days on a healthy series)
    min_deviation: 0                     # ignore deviations smaller than this (series units)
    rate_control: true                   # false: page at the band's edge (2 points out)
    explain_window: 2h                   # cap how far back root cause looks (default: as far
                                         #   back as the symptom's own onset needs)
    labels: {team: payments}             # extra annotation tags (key:value)
```

Errors name the file, line and column of the offending key (``rules check``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from plugin_backend.errors import BackendError, ConfigError
from plugin_backend.scoring.registry import DEFAULT_DETECTOR, available
from plugin_backend.timeparse import parse_duration_s

__all__ = ["Rule", "RuleSet", "load_rules", "parse_rules"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class Rule(BaseModel):
    """One watch rule (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    expr: str = Field(min_length=1, max_length=20_000)
    every_s: float = Field(30.0, alias="every", ge=5, le=86_400)
    step_s: float = Field(15.0, alias="step", ge=1, le=86_400)
    dashboard_uid: str | None = Field(None, min_length=1, max_length=128)
    panel_id: int | None = Field(None, ge=0)
    detector: str = DEFAULT_DETECTOR
    direction: Literal["both", "up", "down"] = "both"
    sensitivity: float = Field(1.0, gt=0, le=100)
    min_deviation: float = Field(0.0, ge=0)
    rate_control: bool = True
    # None: the window follows the symptom's own onset (rca.window); a value overrides it.
    explain_window_s: float | None = Field(None, alias="explain_window", ge=60, le=7 * 86_400)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be 1-63 characters of a-z, 0-9, '_', '.', '-' starting with a letter or "
                "digit (it becomes a metrics label value and an annotation tag)"
            )
        return value

    @field_validator("every_s", "step_s", "explain_window_s", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return parse_duration_s(value, what="duration")
            except BackendError as exc:  # pydantic reports ValueErrors with their location
                raise ValueError(exc.message.removeprefix("duration: ")) from None
        return value

    @field_validator("detector")
    @classmethod
    def _detector(cls, value: str) -> str:
        if value not in available():
            raise ValueError(f"unknown detector {value!r}; available: {', '.join(available())}")
        return value


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source: str

    def get(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rules]


def load_rules(path: str | Path) -> RuleSet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the rules file: {exc.strerror or exc}") from None
    return parse_rules(text, source=str(path))


def parse_rules(text: str, *, source: str = "<rules>") -> RuleSet:
    """Parse and validate a rules file; ``ConfigError`` lists every problem with its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(root, yaml.MappingNode) or _child(root, "rules") is None:
        raise ConfigError(f"{source}:1:1: the file must be a mapping with a 'rules:' list")
    rules_node = _child(root, "rules")
    assert rules_node is not None
    if not isinstance(rules_node, yaml.SequenceNode):
        raise ConfigError(f"{_at(source, rules_node)}: 'rules' must be a list of rules")
    extra = [k for k, _ in _items(root) if k.value != "rules"]
    problems = [f"{_at(source, k)}: unknown key {k.value!r} (only 'rules')" for k in extra]
    rules: list[Rule] = []
    seen: dict[str, yaml.Node] = {}
    for node in rules_node.value:
        if not isinstance(node, yaml.MappingNode):
            problems.append(f"{_at(source, node)}: each rule must be a mapping (name, expr, ...)")
            continue
        data = yaml.safe_load(yaml.serialize(node))
        try:
            rule = Rule.model_validate(data)
        except ValidationError as exc:
            problems += [_describe(source, node, error) for error in exc.errors()]
            continue
        if rule.name in seen:
            problems.append(
                f"{_at(source, _child(node, 'name') or node)}: duplicate rule name {rule.name!r} "
                f"(first at line {seen[rule.name].start_mark.line + 1})"
            )
            continue
        seen[rule.name] = node
        rules.append(rule)
    if problems:
        raise ConfigError("\n".join(problems))
    return RuleSet(tuple(rules), source)


def _items(node: yaml.MappingNode) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
    return [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]


def _child(node: yaml.Node, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((v for k, v in _items(node) if k.value == key), None)


def _key_node(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    return next((k for k, _ in _items(node) if k.value == key), None)


def _at(source: str, node: yaml.Node) -> str:
    return f"{source}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


_ALIASES: Mapping[str, str] = {
    "every_s": "every",
    "step_s": "step",
    "explain_window_s": "explain_window",
}


def _describe(source: str, rule_node: yaml.MappingNode, error: Mapping[str, Any]) -> str:
    loc: Sequence[Any] = error.get("loc", ())
    key = _ALIASES.get(str(loc[0]), str(loc[0])) if loc else ""
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    name = _child(rule_node, "name")
    rule = f"rule {name.value!r}" if isinstance(name, yaml.ScalarNode) else "rule"
    if error.get("type") == "missing":
        return f"{_at(source, rule_node)}: {rule}: missing required key {key!r}"
    if error.get("type") == "extra_forbidden":
        node = _key_node(rule_node, key) or rule_node
        return f"{_at(source, node)}: {rule}: unknown key {key!r}"
    node = _child(rule_node, key) or rule_node
    return f"{_at(source, node)}: {rule}: {key}: {message}"
