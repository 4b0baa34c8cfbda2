"""Grafana's annotation HTTP API (``/api/annotations``), with a service-account token.

Every failure leaves as a ``GrafanaError`` saying whether the request may have been
applied (``in_doubt``: a timeout or a dropped connection after sending) and whether
trying again can help (``retryable``: transport errors, 5xx, 429). The outbox uses
both to decide between "look it up by tag first", "retry later" and "give up".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import requests

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
        session: requests.Session | None = None,
        change_tags: Sequence[str] = ("deploy",),
    ) -> None:
        self.url = url.rstrip("/")
        self.change_tags = list(change_tags)
        self.timeout_s = timeout_s
        self._session = session or requests.Session()
        self._session.headers.update(
            {"Authorization": f"Bearer {token}", "User-Agent": _USER_AGENT}
        )
        if org_id is not None:
            self._session.headers["X-Grafana-Org-Id"] = str(org_id)

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

    def check_ready(self) -> None:
        """``GET /api/health`` answers (Grafana and its database are up)."""
        self._call("GET", "/api/health")

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        what = f"{method} {path}"
        writes = method != "GET"
        try:
            response = self._session.request(
                method, self.url + path, timeout=self.timeout_s, **kwargs
            )
        except requests.ConnectTimeout as exc:
            raise GrafanaError(
                f"Grafana {what}: connect timeout ({exc.__class__.__name__})"
            ) from None
        except requests.ConnectionError as exc:
            # Refused before sending is certain; a reset after sending is not.
            refused = "refused" in str(exc).lower() or "Failed to establish" in str(exc)
            raise GrafanaError(
                f"Grafana {what}: cannot connect ({'refused' if refused else 'dropped'})",
                in_doubt=writes and not refused,
            ) from None
        except requests.Timeout:
            raise GrafanaError(
                f"Grafana {what}: no answer within {self.timeout_s:g} s", in_doubt=writes
            ) from None
        except requests.RequestException as exc:
            raise GrafanaError(
                f"Grafana {what}: {exc.__class__.__name__}", in_doubt=writes
            ) from None
        if response.status_code >= 400:
            raise _status_error(what, response)
        try:
            return response.json()
        except ValueError:
            raise GrafanaError(
                f"Grafana {what}: answer is not JSON (HTTP {response.status_code})",
                in_doubt=writes,
            ) from None


def _tag_labels(tags: Sequence[str]) -> list[tuple[str, str]]:
    """``key:value`` tags (``service:checkout``) as labels; other tags are dropped."""
    pairs = []
    for tag in tags:
        key, sep, value = tag.partition(":")
        if sep and key.isidentifier() and value and key != "incident":
            pairs.append((key, value[:100]))
    return pairs[:8]


def _status_error(what: str, response: requests.Response) -> GrafanaError:
    status = response.status_code
    try:
        detail = str(response.json().get("message", ""))[:300]
    except (ValueError, AttributeError):
        detail = response.text[:300]
    retry_after: float | None = None
    if status == 429:
        try:
            retry_after = float(response.headers.get("Retry-After", ""))
        except ValueError:
            retry_after = None
    retryable = status >= 500 or status in (408, 429)
    hint = ""
    if status in (401, 403):
        hint = (
            " (check PLUGIN_BACKEND_GRAFANA_TOKEN: a service-account token with annotations:write)"
        )
        retryable = True  # a fixed token must not lose queued notes
    return GrafanaError(
        f"Grafana {what}: HTTP {status} {detail}{hint}".rstrip(),
        status=status,
        in_doubt=status >= 500 and what.split(maxsplit=1)[0] != "GET",
        retryable=retryable,
        retry_after_s=retry_after,
    )
