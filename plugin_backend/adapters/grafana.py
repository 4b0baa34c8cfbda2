"""Grafana's annotation HTTP API (``/api/annotations``), with a service-account token.

Every failure leaves as a ``GrafanaError`` saying whether the request may have been
applied (``in_doubt``: a timeout or a dropped connection after sending) and whether
trying again can help (``retryable``: transport errors, 5xx, 429). The outbox uses
both to decide between "look it up by tag first", "retry later" and "give up".
Transport and the mapping of its failures are ``adapters/http.py``'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from plugin_backend.adapters.http import HttpClient, HttpFailure
from plugin_backend.errors import GrafanaError
from plugin_backend.types import ChangeEvent, TimeRange

__all__ = ["GrafanaClient"]

_USER_AGENT = "plugin-backend"


class GrafanaClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        org_id: int | None = None,
        timeout_s: float = 10.0,
        change_tags: Sequence[str] = ("deploy",),
    ) -> None:
        self.url = url.rstrip("/")
        self.change_tags = list(change_tags)
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {token}", "User-Agent": _USER_AGENT}
        if org_id is not None:
            headers["X-Grafana-Org-Id"] = str(org_id)
        self._http = HttpClient(
            where=f"Grafana at {self.url}",
            error=_grafana_error,
            timeout_s=timeout_s,
            headers=headers,
            secrets=[token],
            use_deadline=False,  # the outbox's timeouts, inside a request or not
        )

    def __repr__(self) -> str:  # never the token
        return f"GrafanaClient({self.url!r})"

    def describe(self) -> str:
        return f"Grafana at {self.url}"

    def create_annotation(self, body: Mapping[str, Any]) -> int:
        """``POST /api/annotations``; the new annotation's id."""
        answer = self._call("POST", "/api/annotations", json=dict(body))
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), int):
            raise GrafanaError(
                f"Grafana answered POST /api/annotations without an id: {answer!r:.200}",
                in_doubt=True,
            )
        return int(answer["id"])

    def patch_annotation(self, annotation_id: int, body: Mapping[str, Any]) -> None:
        """``PATCH /api/annotations/{id}``: change time, timeEnd, text, tags."""
        self._call("PATCH", f"/api/annotations/{int(annotation_id)}", json=dict(body))

    def find_annotations(
        self,
        *,
        tags: Sequence[str] = (),
        dashboard_uid: str | None = None,
        limit: int = 100,
        match_any: bool = False,
        time_range: TimeRange | None = None,
    ) -> list[dict[str, Any]]:
        """``GET /api/annotations``: every tag required (Grafana's default) unless
        ``match_any``; annotations overlapping ``time_range`` when given."""
        params: list[tuple[str, str | int]] = [("tags", tag) for tag in tags]
        params.append(("limit", limit))
        params.append(("type", "annotation"))
        if match_any:
            params.append(("matchAny", "true"))
        if dashboard_uid is not None:
            params.append(("dashboardUID", dashboard_uid))
        if time_range is not None:
            params.append(("from", int(time_range.start_s * 1000)))
            params.append(("to", int(time_range.end_s * 1000)))
        answer = self._call("GET", "/api/annotations", params=params)
        if not isinstance(answer, list):
            raise GrafanaError(f"Grafana answered GET /api/annotations with {answer!r:.200}")
        return [a for a in answer if isinstance(a, dict)]

    def change_events(self, time_range: TimeRange) -> list[ChangeEvent]:
        """Annotations carrying any of ``change_tags`` in ``time_range`` (a deploy marked
        on a dashboard, by CI or by hand), as change events for root cause."""
        if not self.change_tags:
            return []
        found = self.find_annotations(
            tags=self.change_tags, match_any=True, time_range=time_range, limit=200
        )
        events = []
        for annotation in found:
            when = annotation.get("time")
            if not isinstance(when, int | float):
                continue
            tags = [t for t in annotation.get("tags") or [] if isinstance(t, str)]
            kind = next((t for t in tags if t in self.change_tags), self.change_tags[0])
            labels = dict(_tag_labels(tags))
            text = str(annotation.get("text") or "")
            events.append(ChangeEvent(when / 1000.0, kind, text, labels))
        return events

    def check_ready(self, timeout_s: float | None = None) -> None:
        """``GET /api/health`` answers (Grafana and its database are up), within
        ``timeout_s`` when it is shorter than the client's timeout."""
        timeout = self.timeout_s if timeout_s is None else min(self.timeout_s, timeout_s)
        self._call("GET", "/api/health", timeout_s=timeout)

    def _call(
        self, method: str, path: str, *, timeout_s: float | None = None, **kwargs: Any
    ) -> Any:
        where = f"Grafana at {self.url} ({method} {path})"
        answer = self._http.request(
            method, self.url + path, timeout_s=timeout_s, where=where, **kwargs
        )
        if answer.status >= 400:
            failure = self._http.status_failure(answer, method, where=where)
            if answer.status in (401, 403):
                hint = (
                    "check PLUGIN_BACKEND_GRAFANA_TOKEN: a service-account token with "
                    "annotations:write"
                )
                failure = dataclasses.replace(failure, message=f"{failure.message} ({hint})")
            raise self._http.fail(failure)
        return self._http.decode_json(answer, method, where=where)


def _tag_labels(tags: Sequence[str]) -> list[tuple[str, str]]:
    """``key:value`` tags (``service:checkout``) as labels; other tags are dropped."""
    pairs = []
    for tag in tags:
        key, sep, value = tag.partition(":")
        if sep and key.isidentifier() and value and key != "incident":
            pairs.append((key, value[:100]))
    return pairs[:8]


def _grafana_error(failure: HttpFailure) -> GrafanaError:
    """Any failure may be retried later from the outbox, except a status that says
    the request itself is wrong (4xx other than 401, 403, 408, 429: a fixed token must
    not lose queued notes)."""
    retryable = True
    if failure.kind == "status" and failure.status is not None:
        retryable = failure.retryable or failure.status in (401, 403)
    return GrafanaError(
        failure.message,
        status=failure.status,
        in_doubt=failure.maybe_applied,
        retryable=retryable,
        retry_after_s=failure.retry_after_s,
    )
