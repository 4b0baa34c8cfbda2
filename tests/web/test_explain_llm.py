"""POST /api/v1/explain with an OpenAI-compatible LLM (a real local HTTP server playing one)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from prometheus_client import CollectorRegistry

from plugin_backend.adapters.demo import DemoSource, incidents_between
from plugin_backend.config import load_settings
from plugin_backend.telemetry import Telemetry
from plugin_backend.web import create_app

INCIDENT = next(
    i
    for i in incidents_between(1_767_225_600, 1_767_225_600 + 86_400, seed=7)
    if i.fault == "pg_pool_exhaustion"
)


class _FakeLLM(BaseHTTPRequestHandler):
    answer: ClassVar[str] = ""
    requests: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        payload = {
            "id": "x",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.answer}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 40},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def llm_server():
    _FakeLLM.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def _client(llm_server):
    settings = load_settings(
        {
            "PLUGIN_BACKEND_LLM_PROVIDER": "openai",
            "PLUGIN_BACKEND_LLM_URL": f"http://127.0.0.1:{llm_server.server_port}",
            "PLUGIN_BACKEND_LLM_MODEL": "test-model",
        }
    )
    telemetry = Telemetry(CollectorRegistry())
    app = create_app(settings, source=DemoSource(seed=7), telemetry=telemetry)
    return app.test_client()


def _explain(client):
    body = {"query": INCIDENT.symptom_series[0], "at": INCIDENT.start_s + 600, "window": "30m"}
    response = client.post("/api/v1/explain", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_the_llm_note_is_used_when_it_names_only_evidence(llm_server):
    cause = INCIDENT.root_cause_series
    _FakeLLM.answer = json.dumps(
        {
            "cause": cause,
            "chain": ["postgres", "checkout"],
            "note": "Postgres ran out of connections, which slowed checkout.",
            "first_check": cause,
        }
    )
    client = _client(llm_server)
    report = _explain(client)
    assert report["llm"]["fallback"] is False
    assert report["llm"]["provider"] == "openai"
    assert report["summary"].startswith("Postgres ran out of connections")
    prompt = _FakeLLM.requests[0]["messages"][-1]["content"]
    assert prompt.startswith("Path: postgres connections piled up ->")
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'plugin_backend_llm_calls_total{outcome="ok",provider="openai"} 1.0' in metrics
    assert 'plugin_backend_llm_tokens_total{kind="prompt",provider="openai"} 120.0' in metrics


def test_an_invented_cause_is_rejected_and_the_template_used(llm_server):
    _FakeLLM.answer = json.dumps(
        {
            "cause": "kafka_consumer_lag",
            "chain": ["kafka"],
            "note": "Kafka lag caused it.",
            "first_check": "kafka_consumer_lag",
        }
    )
    client = _client(llm_server)
    report = _explain(client)
    assert report["llm"]["fallback"] is True
    assert "rejected" in report["llm"]["reason"]
    assert INCIDENT.root_cause_series in report["summary"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'plugin_backend_note_fallbacks_total{reason="rejected"} 1.0' in metrics


def test_an_unreachable_llm_falls_back_without_an_error():
    settings = load_settings(
        {
            "PLUGIN_BACKEND_LLM_PROVIDER": "openai",
            "PLUGIN_BACKEND_LLM_URL": "http://127.0.0.1:9",
            "PLUGIN_BACKEND_LLM_MODEL": "m",
            "PLUGIN_BACKEND_LLM_TIMEOUT_S": "1",
        }
    )
    app = create_app(settings, source=DemoSource(seed=7), telemetry=Telemetry(CollectorRegistry()))
    report = _explain(app.test_client())
    assert report["llm"]["fallback"] is True
    assert INCIDENT.root_cause_series in report["summary"]


def test_openai_provider_needs_url_and_model():
    from plugin_backend.errors import ConfigError

    with pytest.raises(ConfigError, match="PLUGIN_BACKEND_LLM_URL"):
        load_settings({"PLUGIN_BACKEND_LLM_PROVIDER": "openai"})
