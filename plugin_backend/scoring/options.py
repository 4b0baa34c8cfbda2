"""Detector and window-policy options, as a config file or a query payload gives them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plugin_backend.errors import InvalidTarget
from plugin_backend.scoring.alarm_rate import RatePolicy
from plugin_backend.scoring.registry import DEFAULT_DETECTOR
from plugin_backend.scoring.windows import WindowPolicy, pager_policy

__all__ = ["ScoreConfig", "parse_score_config"]


class WindowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float | None = Field(None, gt=0)
    min_points: int | None = Field(None, ge=1)
    min_duration_s: float | None = Field(None, ge=0)
    instant_threshold: float | None = Field(None, gt=0)
    max_gap_s: float | None = Field(None, ge=0)
    realert_s: float | None = Field(None, ge=0)
    #: Alarms per day a healthy series may raise (default: one per three days times
    #: ``sensitivity``); ``rate_control: false`` pages at the band's edge instead.
    alarms_per_day: float | None = Field(None, gt=0)
    rate_control: bool = True


class ScoreConfig(BaseModel):
    """``plugin-backend score --config FILE``: which detector, how sensitive, how
    alarms are raised. Every key is optional; README lists the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: str = DEFAULT_DETECTOR
    direction: Literal["both", "up", "down"] = "both"
    sensitivity: float = Field(1.0, gt=0, le=100)
    min_deviation: float = Field(0.0, ge=0)
    detector_options: dict[str, Any] = Field(default_factory=dict)
    window: WindowOptions = Field(default_factory=WindowOptions)

    def detector_kwargs(self) -> dict[str, Any]:
        return {
            "sensitivity": self.sensitivity,
            "min_deviation": self.min_deviation,
            **self.detector_options,
        }

    def window_policy(self) -> WindowPolicy:
        chosen = {k: v for k, v in self.window.model_dump().items() if v is not None}
        per_day = chosen.pop("alarms_per_day", None)
        rate = pager_policy(self.direction, self.sensitivity).rate
        if per_day is not None:
            rate = RatePolicy(alarms_per_day=per_day)
        if not chosen.pop("rate_control"):
            rate = None
        return WindowPolicy(direction=self.direction, rate=rate, **chosen)


def parse_score_config(raw: Any, source: str) -> ScoreConfig:
    if raw is None:
        return ScoreConfig()
    if not isinstance(raw, dict):
        raise InvalidTarget(f"{source}: expected a mapping of options")
    try:
        return ScoreConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: "
            + ("unknown option" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        )
        raise InvalidTarget(f"{source}: {problems}") from None
