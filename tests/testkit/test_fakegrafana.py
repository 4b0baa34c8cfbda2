"""The fake Grafana of testkit.fakegrafana: the annotation API, auth and
orgs, every fault mode, the CLI, and (when ../shared/contracts holds it) Grafana's
annotations contract for every answer the fake gives and every body the tests send."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from jsonschema import Draft4Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from testkit.fakegrafana import (
    DEFAULT_FIND_LIMIT,
    FIND_QUERY_PARAMS,
    FakeGrafana,
)
from tests.needs import require_shared

REPO = Path(__file__).resolve().parents[2]
TOKEN = "glsa_fake_test_token"
NOW_S = 1_767_268_800.0  # 2026-01-01T12:00:00Z: the fake's clock in these tests
NOW_MS = int(NOW_S * 1000)

# Bodies the tests send; the contract tests check them against the command schemas.
FULL_POST: dict[str, Any] = {
    "dashboardUID": "checkout-overview",
    "dashboardId": 7,
    "panelId": 4,
    "time": NOW_MS - 60_000,
    "timeEnd": NOW_MS,
    "text": "checkout latency: cpu_hog on node-3",
    "tags": ["aiops", "incident:42"],
    "data": {"incident": 42, "score": 0.93},
}
MINIMAL_POST: dict[str, Any] = {"text": "deploy"}
PUT_BODY: dict[str, Any] = {"text": "rewritten", "tags": ["aiops", "resolved"]}
PATCH_BODY: dict[str, Any] = {"text": "patched", "timeEnd": NOW_MS + 60_000}
# (case, body, what the 400 message names)
BAD_POSTS: list[tuple[str, Any, str]] = [
    ("body-array", [MINIMAL_POST], "JSON object"),
    ("text-missing", {"time": NOW_MS}, "text"),
    ("text-empty", {"text": ""}, "text"),
    ("text-number", {"text": 5}, "'text'"),
    ("dashboardUID-number", {"text": "x", "dashboardUID": 7}, "'dashboardUID'"),
    ("dashboardId-float", {"text": "x", "dashboardId": 1.5}, "'dashboardId'"),
    ("panelId-string", {"text": "x", "panelId": "4"}, "'panelId'"),
    ("time-float", {"text": "x", "time": NOW_MS + 0.5}, "'time'"),
    ("time-bool", {"text": "x", "time": True}, "'time'"),
    ("time-beyond-int64", {"text": "x", "time": 2**63}, "'time'"),
    ("timeEnd-iso-string", {"text": "x", "timeEnd": "2026-01-01T12:00:00Z"}, "'timeEnd'"),
    ("tags-string", {"text": "x", "tags": "aiops,incident"}, "'tags'"),
    ("tags-item-number", {"text": "x", "tags": ["aiops", 42]}, "'tags[1]'"),
    ("data-array", {"text": "x", "data": [1, 2]}, "'data'"),
    ("tags-too-long", {"text": "x", "tags": ["a" * 250, "b" * 250]}, "Tags length"),
]
# Bad bodies that only Grafana's handler rejects: the contract's schema accepts them.
SEMANTIC_ONLY = {"text-empty", "tags-too-long"}


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    with FakeGrafana(token=TOKEN, clock=lambda: NOW_S) as fake:
        yield fake


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # never route 127.0.0.1 through an HTTP(S)_PROXY
        yield session


Api = Callable[..., requests.Response]


@pytest.fixture
def api(grafana: FakeGrafana, http: requests.Session) -> Api:
    """``api(method, "/annotations", token=..., org=..., **requests_kwargs)``."""

    def call(
        method: str,
        path: str,
        *,
        token: str | None = TOKEN,
        org: int | str | None = None,
        timeout: float = 5.0,
        **kwargs: Any,
    ) -> requests.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        if org is not None:
            headers["X-Grafana-Org-Id"] = str(org)
        return http.request(
            method, f"{grafana.url}/api{path}", headers=headers, timeout=timeout, **kwargs
        )

    return call


def post(api: Api, body: Any = None, **kwargs: Any) -> int:
    response = api("POST", "/annotations", json=MINIMAL_POST if body is None else body, **kwargs)
    assert response.status_code == 200, response.text
    new_id: int = response.json()["id"]
    return new_id


def find(api: Api, **params: Any) -> list[dict[str, Any]]:
    response = api("GET", "/annotations", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def texts(items: list[dict[str, Any]]) -> list[str]:
    return [item["text"] for item in items]


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# --------------------------------------------------------------------- auth, orgs


def test_health_needs_no_auth(api: Api) -> None:
    response = api("GET", "/health", token=None)
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "version": "fake"}


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "Unauthorized"),
        ("Bearer wrong-token", "Invalid API key"),
        ("Bearer ", "Unauthorized"),
        (f"Basic {TOKEN}", "Unauthorized"),
        (TOKEN, "Unauthorized"),
    ],
)
def test_requests_without_the_token_answer_401_and_change_nothing(
    grafana: FakeGrafana, http: requests.Session, authorization: str | None, message: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method in ("GET", "POST"):
        response = http.request(
            method, f"{grafana.url}/api/annotations", json=MINIMAL_POST, headers=headers, timeout=5
        )
        assert response.status_code == 401
        assert response.json() == {"message": message}
    assert grafana.annotations() == []
    recorded = grafana.requests
    assert [r.has_authorization for r in recorded] == [authorization is not None] * 2
    assert all(r.org_id is None and r.status == 401 for r in recorded)


def test_the_right_token_is_accepted_and_never_recorded(grafana: FakeGrafana, api: Api) -> None:
    assert api("GET", "/annotations").status_code == 200
    (recorded,) = grafana.requests
    assert recorded.has_authorization
    assert recorded.headers["Authorization"] == "Bearer <redacted>"
    assert TOKEN not in json.dumps(recorded.headers)


def test_org_header_must_match_the_tokens_org_and_orgs_are_separate(
    grafana: FakeGrafana, api: Api
) -> None:
    grafana.add_token("glsa_org2", org_id=2)
    in_org1 = post(api, {"text": "org 1"})
    assert post(api, {"text": "org 1, header"}, org=1) > in_org1
    post(api, {"text": "org 1, unparsable header"}, org="abc")  # Grafana ignores it
    in_org2 = post(api, {"text": "org 2"}, token="glsa_org2", org=2)
    post(api, {"text": "org 2, no header"}, token="glsa_org2")

    mismatch = api("POST", "/annotations", json=MINIMAL_POST, org=2)
    assert mismatch.status_code == 401
    assert mismatch.json() == {"message": "API key does not belong to the requested organization"}

    assert texts(grafana.annotations()) == ["org 1", "org 1, header", "org 1, unparsable header"]
    assert grafana.annotations(org_id=1) == grafana.annotations()
    assert texts(grafana.annotations(org_id=2)) == ["org 2", "org 2, no header"]
    assert sorted(texts(find(api))) == sorted(texts(grafana.annotations()))
    assert api("GET", f"/annotations/{in_org2}").status_code == 404
    assert api("DELETE", f"/annotations/{in_org1}", token="glsa_org2").status_code == 404
    assert [r.org_id_header for r in grafana.requests[:4]] == [None, "1", "abc", "2"]
    assert [r.org_id for r in grafana.requests[:5]] == [1, 1, 1, 2, 2]


# ----------------------------------------------------------------- create, read


@pytest.mark.parametrize(
    ("body", "names"), [(b, n) for _, b, n in BAD_POSTS], ids=[c for c, _, _ in BAD_POSTS]
)
def test_post_rejects_what_grafana_rejects_naming_the_field(
    grafana: FakeGrafana, api: Api, body: Any, names: str
) -> None:
    response = api("POST", "/annotations", json=body)
    assert response.status_code == 400
    (key,) = response.json()
    assert key == "message"
    assert names in response.json()["message"]
    assert grafana.annotations() == []


def test_post_rejects_a_body_that_is_not_json(grafana: FakeGrafana, api: Api) -> None:
    response = api("POST", "/annotations", data=b'{"text": ')
    assert response.status_code == 400
    assert response.json()["message"].startswith("bad request data: invalid JSON")
    assert grafana.annotations() == []


def test_create_then_read_back_every_contract_field(grafana: FakeGrafana, api: Api) -> None:
    response = api("POST", "/annotations", json=FULL_POST)
    assert response.status_code == 200
    new_id = response.json()["id"]
    assert response.json() == {"id": new_id, "message": "Annotation added"}
    expected = {
        "id": new_id,
        "alertId": 0,
        "alertName": "",
        "dashboardId": 7,
        "dashboardUID": "checkout-overview",
        "panelId": 4,
        "userId": 2,
        "newState": "",
        "prevState": "",
        "created": NOW_MS,
        "updated": NOW_MS,
        "time": NOW_MS - 60_000,
        "timeEnd": NOW_MS,
        "text": FULL_POST["text"],
        "tags": ["aiops", "incident:42"],
        "login": "sa-fake-grafana",
        "email": "",
        "avatarUrl": "",
        "data": {"incident": 42, "score": 0.93},
    }
    assert api("GET", f"/annotations/{new_id}").json() == expected
    assert find(api) == [expected]
    assert grafana.annotations() == [expected]


def test_times_default_and_order_like_grafana(api: Api) -> None:
    now = post(api, {"text": "no time"})
    point = post(api, {"text": "point", "time": NOW_MS - 5_000})
    region = post(
        api, {"text": "reversed region", "time": NOW_MS - 1_000, "timeEnd": NOW_MS - 9_000}
    )
    null_time = post(api, {"text": "null time", "time": None, "tags": None, "data": None})
    got = {item["id"]: item for item in find(api)}
    assert (got[now]["time"], got[now]["timeEnd"]) == (NOW_MS, NOW_MS)
    assert (got[point]["time"], got[point]["timeEnd"]) == (NOW_MS - 5_000, NOW_MS - 5_000)
    assert (got[region]["time"], got[region]["timeEnd"]) == (NOW_MS - 9_000, NOW_MS - 1_000)
    assert (got[null_time]["tags"], got[null_time]["data"]) == ([], {})


def test_tags_are_stored_as_grafana_stores_them(api: Api) -> None:
    raw = [" host : web-1 ", "incident:2026-01-01T10:00:00Z", "host:web-1", "", "  ", "solo"]
    new_id = post(api, {"text": "tags", "tags": raw})
    stored = api("GET", f"/annotations/{new_id}").json()["tags"]
    assert stored == ["host:web-1", "incident:2026-01-01T10", "solo"]


def test_find_filters_on_tags_all_or_any_and_on_keys(api: Api) -> None:
    post(api, {"text": "A", "tags": ["aiops", "incident:1"]})
    post(api, {"text": "B", "tags": ["aiops", "incident:2"]})
    post(api, {"text": "C", "tags": ["deploy"]})

    def names(*tags: str, **params: Any) -> list[str]:
        return sorted(texts(find(api, tags=list(tags), **params)))

    assert names("aiops", "incident:1") == ["A"]
    assert names("aiops", "incident:1", matchAny="true") == ["A", "B"]
    assert names("aiops", "deploy") == []
    assert names("aiops", "deploy", matchAny="1") == ["A", "B", "C"]
    assert names("incident") == ["A", "B"]  # a tag without value matches on the key
    assert names("incident:3") == []
    assert names() == ["A", "B", "C"]


def test_find_filters_on_dashboard_panel_user_alert_and_type(
    grafana: FakeGrafana, api: Api
) -> None:
    grafana.add_token("glsa_other_user", org_id=1)
    post(api, {"text": "dash 1 panel 1", "dashboardUID": "d1", "dashboardId": 1, "panelId": 1})
    post(api, {"text": "dash 1 panel 2", "dashboardUID": "d1", "dashboardId": 1, "panelId": 2})
    post(api, {"text": "dash 2", "dashboardUID": "d2", "dashboardId": 2}, token="glsa_other_user")
    post(api, {"text": "org-wide"})

    def names(**params: Any) -> list[str]:
        return sorted(texts(find(api, **params)))

    assert names(dashboardUID="d1") == ["dash 1 panel 1", "dash 1 panel 2"]
    assert names(dashboardUID="d1", panelId=2) == ["dash 1 panel 2"]
    assert names(dashboardId=2) == ["dash 2"]
    assert names(userId=3) == ["dash 2"]
    assert names(dashboardUID="nope") == []
    assert names(type="alert") == []
    assert names(alertId=5) == []
    assert len(names(type="annotation")) == 4
    assert len(names(panelId="not-a-number")) == 4  # Grafana reads it as 0: no filter


def test_find_from_to_overlap_and_both_needed(api: Api) -> None:
    post(api, {"text": "early", "time": 1_000, "timeEnd": 2_000})
    post(api, {"text": "region", "time": 3_000, "timeEnd": 9_000})
    post(api, {"text": "late", "time": 10_000})

    def names(**params: Any) -> list[str]:
        return sorted(texts(find(api, **params)))

    assert names(**{"from": 2_000, "to": 3_000}) == ["early", "region"]  # edges overlap
    assert names(**{"from": 4_000, "to": 5_000}) == ["region"]
    assert names(**{"from": 9_500, "to": 20_000}) == ["late"]
    assert names(**{"from": 2_500, "to": 2_900}) == []
    assert len(names(**{"from": 9_500})) == 3  # Grafana ignores a lone bound


def test_find_orders_newest_end_first_and_limits(grafana: FakeGrafana, api: Api) -> None:
    for i in range(DEFAULT_FIND_LIMIT + 1):
        grafana.seed({"text": f"seed {i}", "time": 1_000 * (i + 1)})
    post(api, {"text": "long region", "time": 500, "timeEnd": 10**9})
    everything = find(api, limit=1_000)
    assert len(everything) == DEFAULT_FIND_LIMIT + 2
    assert everything[0]["text"] == "long region"
    assert [item["timeEnd"] for item in everything[1:]] == sorted(
        (item["timeEnd"] for item in everything[1:]), reverse=True
    )
    assert len(find(api)) == DEFAULT_FIND_LIMIT
    assert texts(find(api, limit=2)) == ["long region", f"seed {DEFAULT_FIND_LIMIT}"]


# ----------------------------------------------------------- update, delete, 404


def test_put_replaces_text_and_tags_and_keeps_what_is_absent(api: Api) -> None:
    new_id = post(api, FULL_POST)
    response = api("PUT", f"/annotations/{new_id}", json=PUT_BODY)
    assert response.status_code == 200
    assert response.json() == {"message": "Annotation updated"}
    got = api("GET", f"/annotations/{new_id}").json()
    assert (got["text"], got["tags"]) == ("rewritten", ["aiops", "resolved"])
    assert (got["time"], got["timeEnd"], got["data"]) == (
        FULL_POST["time"],
        FULL_POST["timeEnd"],
        FULL_POST["data"],
    )
    assert texts(find(api, tags="resolved")) == ["rewritten"]
    assert find(api, tags="incident:42") == []

    api("PUT", f"/annotations/{new_id}", json={"time": 5_000, "data": {"v": 2}})
    got = api("GET", f"/annotations/{new_id}").json()
    assert (got["text"], got["tags"], got["data"]) == ("", [], {"v": 2})  # Grafana's PUT
    assert (got["time"], got["timeEnd"]) == (5_000, FULL_POST["timeEnd"])


def test_patch_changes_only_what_is_given(api: Api) -> None:
    new_id = post(api, FULL_POST)
    response = api("PATCH", f"/annotations/{new_id}", json=PATCH_BODY)
    assert response.status_code == 200
    assert response.json() == {"message": "Annotation patched"}
    got = api("GET", f"/annotations/{new_id}").json()
    assert (got["text"], got["timeEnd"]) == ("patched", NOW_MS + 60_000)
    assert (got["time"], got["tags"], got["data"]) == (
        FULL_POST["time"],
        FULL_POST["tags"],
        FULL_POST["data"],
    )
    api("PATCH", f"/annotations/{new_id}", json={"text": "", "tags": ["only"], "time": 0})
    got = api("GET", f"/annotations/{new_id}").json()
    assert (got["text"], got["tags"], got["time"]) == ("patched", ["only"], FULL_POST["time"])
    assert texts(find(api, tags="only")) == ["patched"]


def test_delete_then_gone(grafana: FakeGrafana, api: Api) -> None:
    keep, gone = post(api), post(api)
    response = api("DELETE", f"/annotations/{gone}")
    assert response.status_code == 200
    assert response.json() == {"message": "Annotation deleted"}
    assert [item["id"] for item in grafana.annotations()] == [keep]
    assert api("DELETE", f"/annotations/{gone}").status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_unknown_and_invalid_ids(grafana: FakeGrafana, api: Api, method: str) -> None:
    post(api)
    body = PUT_BODY if method in ("PUT", "PATCH") else None
    missing = api(method, "/annotations/999999", json=body)
    assert missing.status_code == 404
    assert missing.json() == {"message": "Annotation not found"}
    invalid = api(method, "/annotations/abc", json=body)
    assert invalid.status_code == 400
    assert invalid.json() == {"message": "annotationId is invalid"}
    assert texts(grafana.annotations()) == ["deploy"]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_put_and_patch_bind_their_bodies(grafana: FakeGrafana, api: Api, method: str) -> None:
    new_id = post(api)
    for body, field in [({"time": "soon"}, "'time'"), ({"tags": "x"}, "'tags'"), ([], "object")]:
        response = api(method, f"/annotations/{new_id}", json=body)
        assert response.status_code == 400
        assert field in response.json()["message"]
    assert texts(grafana.annotations()) == ["deploy"]


def test_tags_endpoint_counts_tags(api: Api) -> None:
    post(api, {"text": "A", "tags": ["aiops", "incident:1"]})
    post(api, {"text": "B", "tags": ["aiops", "incident:2"]})
    result = api("GET", "/annotations/tags").json()
    assert result == {
        "result": {
            "tags": [
                {"tag": "aiops", "count": 2},
                {"tag": "incident:1", "count": 1},
                {"tag": "incident:2", "count": 1},
            ]
        }
    }
    filtered = api("GET", "/annotations/tags", params={"tag": "INC", "limit": 1}).json()
    assert filtered == {"result": {"tags": [{"tag": "incident:1", "count": 1}]}}


@pytest.mark.parametrize("path", ["/annotations/graphite", "/annotations/mass-delete"])
def test_contract_operations_the_fake_leaves_out_say_so(api: Api, path: str) -> None:
    response = api("POST", path, json={})
    assert response.status_code == 501
    assert "not implemented" in response.json()["message"]


def test_requests_are_recorded(grafana: FakeGrafana, api: Api) -> None:
    post(api, FULL_POST, org=1)
    api("GET", "/annotations", params={"tags": ["a", "b"], "limit": 5})
    created, found = grafana.requests
    assert (created.method, created.path, created.status, created.body) == (
        "POST",
        "/api/annotations",
        200,
        FULL_POST,
    )
    assert created.raw_body == json.dumps(FULL_POST).encode()
    assert created.headers["Content-Type"] == "application/json"
    assert (created.org_id_header, created.org_id, created.fault) == ("1", 1, None)
    assert (found.method, found.query, found.body) == (
        "GET",
        {"tags": ["a", "b"], "limit": ["5"]},
        None,
    )
    found.query.clear()  # copies: the fake's record is untouched
    assert grafana.requests[1].query == {"tags": ["a", "b"], "limit": ["5"]}
    grafana.clear_requests()
    assert grafana.requests == []


def test_concurrent_posts_get_distinct_ids(grafana: FakeGrafana, api: Api) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda i: post(api, {"text": f"n{i}"}), range(40)))
    assert len(set(ids)) == 40
    assert len(grafana.annotations()) == 40


# ------------------------------------------------------------------------ faults


def test_fail_next_answers_the_status_and_changes_nothing(grafana: FakeGrafana, api: Api) -> None:
    grafana.fail_next(2)
    for _ in range(2):
        response = api("POST", "/annotations", json=MINIMAL_POST)
        assert response.status_code == 503
        assert response.json() == {"message": "Service Unavailable"}
        assert "Retry-After" not in response.headers
        assert api("GET", "/health").status_code == 200  # spared by the default prefix
    assert grafana.annotations() == []
    post(api)
    assert [r.fault for r in grafana.requests] == ["fail_next", None, "fail_next", None, None]


def test_fail_next_429_carries_retry_after(grafana: FakeGrafana, api: Api) -> None:
    grafana.fail_next(1, status=429, retry_after=7)
    response = api("GET", "/annotations", token=None)  # faults come before auth
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json() == {"message": "Too Many Requests"}
    assert api("GET", "/annotations").status_code == 200


def test_fail_next_can_include_health(grafana: FakeGrafana, api: Api) -> None:
    grafana.fail_next(1, status=500, path_prefix="/api")
    assert api("GET", "/health").status_code == 500
    assert api("GET", "/health").status_code == 200


def test_fail_for_a_period(grafana: FakeGrafana, api: Api) -> None:
    grafana.fail_for(0.3, status=502)
    assert api("POST", "/annotations", json=MINIMAL_POST).status_code == 502
    assert api("GET", "/annotations").status_code == 502
    wait_until(lambda: api("GET", "/annotations").status_code == 200)
    post(api)
    assert len(grafana.annotations()) == 1


def test_delay_past_the_client_timeout_stores_nothing(grafana: FakeGrafana, api: Api) -> None:
    grafana.delay(0.3)
    with pytest.raises(requests.ReadTimeout):
        api("POST", "/annotations", json=MINIMAL_POST, timeout=0.1)
    wait_until(lambda: grafana.requests[-1].fault == "delay:client-gone")
    assert grafana.annotations() == []
    assert grafana.requests[-1].status is None

    grafana.delay(0.05)  # within the client's patience: served, just late
    post(api)
    assert len(grafana.annotations()) == 1
    assert grafana.requests[-1].fault == "delay"


def test_store_then_hang_stores_although_the_client_times_out(
    grafana: FakeGrafana, api: Api
) -> None:
    grafana.store_then_hang(1, 5.0)  # stop() ends the hang, the test does not wait it out
    with pytest.raises(requests.ReadTimeout):
        api("POST", "/annotations", json={"text": "once", "tags": ["outbox:k1"]}, timeout=0.2)
    (stored,) = find(api, tags="outbox:k1")
    assert stored["text"] == "once"
    assert grafana.requests[0].fault == "store_then_hang"
    post(api, {"text": "next one answers"}, timeout=1.0)

    grafana.store_then_hang(1, 5.0)
    with pytest.raises(requests.ReadTimeout):
        api("PUT", f"/annotations/{stored['id']}", json=PUT_BODY, timeout=0.2)
    assert api("GET", f"/annotations/{stored['id']}").json()["text"] == PUT_BODY["text"]


def test_store_then_hang_skips_rejected_writes(grafana: FakeGrafana, api: Api) -> None:
    grafana.store_then_hang(1, 5.0)
    assert api("POST", "/annotations", json={"text": ""}, timeout=1.0).status_code == 400
    assert api("GET", "/annotations", timeout=1.0).status_code == 200
    with pytest.raises(requests.ReadTimeout):
        api("POST", "/annotations", json=MINIMAL_POST, timeout=0.2)


def test_reset_faults(grafana: FakeGrafana, api: Api) -> None:
    grafana.fail_next(5)
    grafana.fail_for(60)
    grafana.delay(60)
    grafana.store_then_hang(5, 60)
    grafana.reset_faults()
    post(api, timeout=1.0)
    assert api("GET", "/annotations", timeout=1.0).status_code == 200


@pytest.mark.parametrize(
    "call",
    [
        lambda g: g.fail_next(-1),
        lambda g: g.fail_next(1, status=200),
        lambda g: g.fail_for(-1.0),
        lambda g: g.delay(float("nan")),
        lambda g: g.store_then_hang(1, -0.5),
    ],
)
def test_fault_arguments_are_checked(
    grafana: FakeGrafana, call: Callable[[FakeGrafana], None]
) -> None:
    with pytest.raises(ValueError):
        call(grafana)


def test_down_refuses_and_up_serves_the_same_port_and_state(grafana: FakeGrafana, api: Api) -> None:
    kept = post(api)
    url = grafana.url
    for _ in range(3):
        grafana.down()
        assert not grafana.is_up
        with pytest.raises(requests.ConnectionError):
            api("GET", "/health", timeout=1.0)
        with pytest.raises(requests.ConnectionError):
            api("POST", "/annotations", json=MINIMAL_POST, timeout=1.0)
        grafana.down()  # idempotent
        grafana.up()
        grafana.up()  # idempotent
        assert grafana.is_up
        assert grafana.url == url
        assert api("GET", f"/annotations/{kept}").status_code == 200
    assert len(grafana.annotations()) == 1


def test_down_cuts_a_request_in_flight(grafana: FakeGrafana, api: Api) -> None:
    grafana.store_then_hang(1, 30.0)
    outcome: list[BaseException | requests.Response] = []

    def client() -> None:
        try:
            outcome.append(api("POST", "/annotations", json=MINIMAL_POST, timeout=10.0))
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    wait_until(lambda: any(r.fault == "store_then_hang" for r in grafana.requests))
    grafana.down()
    thread.join(timeout=5.0)  # the client's own timeout is 10 s, the hang 30 s
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], requests.ConnectionError)
    assert len(grafana.annotations()) == 1  # stored before the hang
    grafana.up()
    assert api("GET", "/health").status_code == 200


def test_start_stop_and_restart_on_the_same_port() -> None:
    fake = FakeGrafana(token=TOKEN)
    with pytest.raises(RuntimeError):
        _ = fake.url
    with pytest.raises(RuntimeError):
        fake.down()
    fake.start()
    try:
        with pytest.raises(RuntimeError):
            fake.start()
        url = fake.url
        fake.seed(MINIMAL_POST)
        fake.stop()
        fake.start()
        assert fake.url == url
        assert len(fake.annotations()) == 1
    finally:
        fake.stop()
    with pytest.raises(ValueError, match="text"):
        fake.seed({"text": ""})


def test_command_line_serves_until_terminated() -> None:
    module = "testkit.fakegrafana"
    args = ["--port", "0", "--token", TOKEN, "--org-id", "3"]
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no start-up line within 30 s"
        started = json.loads(proc.stdout.readline())
        assert started["org_id"] == 3
        url = f"{started['url']}/api"
        auth = {"Authorization": f"Bearer {TOKEN}", "X-Grafana-Org-Id": "3"}
        with requests.Session() as http:
            http.trust_env = False
            assert http.get(f"{url}/health", timeout=5).status_code == 200
            created = http.post(f"{url}/annotations", json=MINIMAL_POST, headers=auth, timeout=5)
            assert created.status_code == 200
            found = http.get(f"{url}/annotations", headers=auth, timeout=5).json()
            assert texts(found) == ["deploy"]
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# ------------------------------------------------------------------- the contract

SPEC_PARTS = ("contracts", "grafana-annotations-openapi.json")
SPEC_URI = "urn:grafana-annotations-openapi"

# (operationId, status) the fake answers, as Grafana's handlers do, though the contract
# does not declare them; each answer's body is checked against ErrorResponseBody.
UNDECLARED = {
    ("getAnnotationByID", 400): "annotationId is invalid",
    ("getAnnotationByID", 404): "findAnnotationByID: Annotation not found",
    ("updateAnnotation", 404): "findAnnotationByID: Annotation not found",
    ("deleteAnnotationByID", 404): "findAnnotationByID: Annotation not found",
    ("patchAnnotation", 400): "bad request data (web.Bind)",
    ("postAnnotation", 503): "injected fault",
    ("getAnnotations", 429): "injected fault",
}
LEFT_OUT = {"postGraphiteAnnotation", "massDeleteAnnotations"}  # the fake answers 501

INT64 = FormatChecker()


@INT64.checks("int64")
def _is_int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@dataclass(frozen=True)
class Exchange:
    case: str
    operation: str  # the contract's operationId
    status: int
    body: Any


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(require_shared(*SPEC_PARTS).read_text())
    return loaded


def validator(spec: dict[str, Any], pointer: str) -> Draft4Validator:
    """Draft 4 validation (Swagger 2.0 schemas) of the spec's schema at ``pointer``."""
    resource = Resource.from_contents(spec, default_specification=DRAFT4)
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
    return Draft4Validator(
        {"$ref": f"{SPEC_URI}#{pointer}"}, registry=registry, format_checker=INT64
    )


def strict(node: Any, spec: dict[str, Any]) -> Any:
    """The schema with refs inlined and no properties beyond the declared ones."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return strict(target, spec)
        out = {key: strict(value, spec) for key, value in node.items()}
        if "properties" in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict(value, spec) for value in node]
    return node


def response_pointer(spec: dict[str, Any], operation: str, status: int) -> str:
    for methods in spec["paths"].values():
        for op in methods.values():
            if op["operationId"] == operation:
                ref = op["responses"].get(str(status), {}).get("$ref")
                if ref is None:
                    assert (operation, status) in UNDECLARED, (operation, status)
                    return "/definitions/ErrorResponseBody"
                return f"/responses/{ref.rsplit('/', 1)[1]}/schema"
    raise AssertionError(f"no operation {operation} in the contract")


@pytest.fixture(scope="module")
def exchanges() -> list[Exchange]:
    """One answer of every kind the fake gives for the contract's operations."""
    out: list[Exchange] = []
    with FakeGrafana(token=TOKEN, clock=lambda: NOW_S) as fake, requests.Session() as http:
        http.trust_env = False

        def do(
            case: str,
            operation: str,
            method: str,
            path: str,
            *,
            token: str | None = TOKEN,
            **kwargs: Any,
        ) -> Any:
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            response = http.request(
                method, f"{fake.url}/api{path}", headers=headers, timeout=5, **kwargs
            )
            out.append(Exchange(case, operation, response.status_code, response.json()))
            return response.json()

        first = do("post", "postAnnotation", "POST", "/annotations", json=FULL_POST)["id"]
        do("post-minimal", "postAnnotation", "POST", "/annotations", json=MINIMAL_POST)
        for case, body, _ in BAD_POSTS:
            do(f"post-{case}", "postAnnotation", "POST", "/annotations", json=body)
        do("post-401", "postAnnotation", "POST", "/annotations", token=None, json=MINIMAL_POST)
        do("post-401-wrong", "postAnnotation", "POST", "/annotations", token="x", json={})
        do("find", "getAnnotations", "GET", "/annotations")
        filters = {
            "tags": ["aiops", "incident:42"],
            "matchAny": "true",
            "from": 1,
            "to": NOW_MS,
            "dashboardUID": "checkout-overview",
            "panelId": 4,
            "limit": 10,
        }
        do("find-filtered", "getAnnotations", "GET", "/annotations", params=filters)
        do("find-empty", "getAnnotations", "GET", "/annotations", params={"type": "alert"})
        do("find-401", "getAnnotations", "GET", "/annotations", token=None)
        do("get", "getAnnotationByID", "GET", f"/annotations/{first}")
        do("get-404", "getAnnotationByID", "GET", "/annotations/999999")
        do("get-400", "getAnnotationByID", "GET", "/annotations/abc")
        do("get-401", "getAnnotationByID", "GET", f"/annotations/{first}", token=None)
        do("put", "updateAnnotation", "PUT", f"/annotations/{first}", json=PUT_BODY)
        do("put-400", "updateAnnotation", "PUT", f"/annotations/{first}", json={"time": "x"})
        do("put-404", "updateAnnotation", "PUT", "/annotations/999999", json=PUT_BODY)
        do("put-401", "updateAnnotation", "PUT", f"/annotations/{first}", token=None, json={})
        do("patch", "patchAnnotation", "PATCH", f"/annotations/{first}", json=PATCH_BODY)
        do("patch-400", "patchAnnotation", "PATCH", f"/annotations/{first}", json={"tags": 1})
        do("patch-404", "patchAnnotation", "PATCH", "/annotations/999999", json=PATCH_BODY)
        do("tags", "getAnnotationTags", "GET", "/annotations/tags", params={"tag": "ai"})
        do("tags-401", "getAnnotationTags", "GET", "/annotations/tags", token=None)
        do("delete", "deleteAnnotationByID", "DELETE", f"/annotations/{first}")
        do("delete-404", "deleteAnnotationByID", "DELETE", f"/annotations/{first}")
        do("delete-401", "deleteAnnotationByID", "DELETE", f"/annotations/{first}", token=None)
        fake.fail_next(1)
        do("fault-503", "postAnnotation", "POST", "/annotations", json=MINIMAL_POST)
        fake.fail_next(1, status=429, retry_after=1)
        do("fault-429", "getAnnotations", "GET", "/annotations")
    return out


def test_every_answer_validates_against_the_contract(
    spec: dict[str, Any], exchanges: list[Exchange]
) -> None:
    failures = [
        f"{ex.case} ({ex.operation} {ex.status}): {error.message}"
        for ex in exchanges
        for error in validator(spec, response_pointer(spec, ex.operation, ex.status)).iter_errors(
            ex.body
        )
    ]
    assert not failures, "\n".join(failures)


def test_the_fake_adds_no_fields_beyond_the_contract(
    spec: dict[str, Any], exchanges: list[Exchange]
) -> None:
    failures = []
    for ex in exchanges:
        schema = strict({"$ref": f"#{response_pointer(spec, ex.operation, ex.status)}"}, spec)
        failures += [
            f"{ex.case}: {e.message}" for e in Draft4Validator(schema).iter_errors(ex.body)
        ]
    assert not failures, "\n".join(failures)


def test_annotations_carry_every_contract_field(
    spec: dict[str, Any], exchanges: list[Exchange]
) -> None:
    fields = set(spec["definitions"]["Annotation"]["properties"])
    found = {ex.case: ex.body for ex in exchanges if ex.status == 200}
    items = [found["get"], *found["find"], *found["find-filtered"]]
    assert len(items) == 4
    for item in items:
        assert set(item) == fields


def test_the_undeclared_statuses_are_exactly_the_known_ones(
    spec: dict[str, Any], exchanges: list[Exchange]
) -> None:
    operations = {
        op["operationId"]: op for methods in spec["paths"].values() for op in methods.values()
    }
    undeclared = {
        (ex.operation, ex.status)
        for ex in exchanges
        if str(ex.status) not in operations[ex.operation]["responses"]
    }
    assert undeclared == set(UNDECLARED)  # shrink UNDECLARED when the contract catches up


def test_every_contract_operation_is_exercised(
    spec: dict[str, Any], exchanges: list[Exchange]
) -> None:
    operations = {
        op["operationId"] for methods in spec["paths"].values() for op in methods.values()
    }
    assert operations - {ex.operation for ex in exchanges} == LEFT_OUT
    assert spec["basePath"] == "/api"


def test_request_bodies_match_the_command_schemas(spec: dict[str, Any]) -> None:
    for pointer, body in [
        ("/definitions/PostAnnotationsCmd", FULL_POST),
        ("/definitions/PostAnnotationsCmd", MINIMAL_POST),
        ("/definitions/UpdateAnnotationsCmd", PUT_BODY),
        ("/definitions/PatchAnnotationsCmd", PATCH_BODY),
    ]:
        errors = [e.message for e in validator(spec, pointer).iter_errors(body)]
        assert not errors, (pointer, body, errors)
        strict_errors = list(
            Draft4Validator(strict({"$ref": f"#{pointer}"}, spec)).iter_errors(body)
        )
        assert not strict_errors, (pointer, body)


def test_bodies_the_fake_rejects_break_the_contract_too(spec: dict[str, Any]) -> None:
    post_cmd = validator(spec, "/definitions/PostAnnotationsCmd")
    contract_accepts = {case for case, body, _ in BAD_POSTS if post_cmd.is_valid(body)}
    assert contract_accepts == SEMANTIC_ONLY


def test_find_understands_every_contract_query_parameter(spec: dict[str, Any]) -> None:
    params = {p["name"] for p in spec["paths"]["/annotations"]["get"]["parameters"]}
    assert set(FIND_QUERY_PARAMS) == params
