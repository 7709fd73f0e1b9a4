"""Raw-HTTP error cases: OpenAI error bodies with the right status, the API key, no crash, no leak.

This module's server has ``server.api_key`` set and ``kv.max_model_len=256`` (so the length
checks are cheap to hit). After every rejection the KV pool must be whole again.
"""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import MODEL, ServerProcess, start_server

KEY = "test-key-123"
MAX_LEN = 256


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    yield from start_server(
        tmp_path_factory, "errors", [f"server.api_key={KEY}", f"kv.max_model_len={MAX_LEN}"]
    )


@pytest.fixture(scope="module")
def http(server: ServerProcess):
    with httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


def assert_error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


def completion(**kw: object) -> dict:
    return {"model": MODEL, "prompt": "Hello", "max_tokens": 2, **kw}


def test_api_key_required(server: ServerProcess, http: httpx.Client) -> None:
    assert_error(httpx.get(server.base + "/v1/models"), 401)
    bad = httpx.post(
        server.base + "/v1/completions", json=completion(), headers={"Authorization": "Bearer nope"}
    )
    assert_error(bad, 401)
    assert_error(
        httpx.post(server.base + "/v1/chat/completions", json={}, headers={"Authorization": KEY}), 401
    )
    assert http.get("/v1/models").status_code == 200
    assert http.post("/v1/completions", json=completion()).status_code == 200
    assert httpx.get(server.base + "/health").status_code == 200  # probes need no key


def test_malformed_json_and_wrong_types(http: httpx.Client) -> None:
    assert_error(
        http.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"}), 400
    )
    assert_error(http.post("/v1/completions", json=[1, 2]), 400)
    assert_error(http.post("/v1/completions", json=completion(max_tokens="many")), 400, "max_tokens")
    assert_error(http.post("/v1/completions", json=completion(temperature=[1])), 400, "temperature")
    assert_error(http.post("/v1/completions", json={"model": MODEL}), 400, "prompt")
    assert_error(http.post("/v1/chat/completions", json={"model": MODEL, "messages": "hi"}), 400)
    assert_error(http.post("/v1/chat/completions", json={"model": MODEL, "messages": []}), 400, "messages")
    assert_error(http.post("/v1/completions", json=completion(prompt={"a": 1})), 400)


def test_unknown_model_is_404(http: httpx.Client) -> None:
    err = assert_error(http.post("/v1/completions", json=completion(model="gpt-9")), 404, "model")
    assert err["code"] == "model_not_found"
    chat = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
    assert_error(http.post("/v1/chat/completions", json=chat), 404, "model")


def test_context_length_names_both_numbers(http: httpx.Client) -> None:
    ids = list(range(1000, 1200))  # 200 prompt tokens
    err = assert_error(
        http.post("/v1/completions", json=completion(prompt=ids, max_tokens=100)), 400, "max_tokens"
    )
    for number in (str(MAX_LEN), "300", "200", "100"):
        assert number in err["message"], err["message"]
    assert_error(http.post("/v1/completions", json=completion(prompt=list(range(1000, 1300)))), 400)
    msgs = [{"role": "user", "content": "hi"}]
    chat = {"model": MODEL, "messages": msgs, "max_completion_tokens": 1000}
    assert str(MAX_LEN) in assert_error(http.post("/v1/chat/completions", json=chat), 400)["message"]
    ok = http.post("/v1/completions", json=completion(prompt=ids, max_tokens=56))
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 56


@pytest.mark.parametrize(
    "field,value",
    [
        ("temperature", 5.0),
        ("temperature", -1),
        ("top_p", 0),
        ("n", 0),
        ("n", 10**6),
        ("max_tokens", 0),
        ("logprobs", 50),
        ("presence_penalty", 1.0),
        ("frequency_penalty", 0.5),
        ("logit_bias", {"5": 1}),
        ("echo", True),
        ("suffix", "x"),
        ("best_of", 3),
        ("stop", [""]),
    ],
)
def test_unsupported_values_are_400(http: httpx.Client, field: str, value: object) -> None:
    assert_error(http.post("/v1/completions", json=completion(**{field: value})), 400, field)


def test_bad_prompts_and_chat_parameters(http: httpx.Client) -> None:
    assert_error(http.post("/v1/completions", json=completion(prompt="")), 400, "prompt")
    assert_error(http.post("/v1/completions", json=completion(prompt=[])), 400, "prompt")
    assert_error(http.post("/v1/completions", json=completion(prompt=[10**9])), 400, "prompt")
    assert_error(http.post("/v1/completions", json=completion(prompt=["a", "b"])), 400, "prompt")
    base = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert_error(
        http.post("/v1/chat/completions", json={**base, "logprobs": True, "top_logprobs": 99}),
        400,
        "top_logprobs",
    )
    assert_error(
        http.post("/v1/chat/completions", json={**base, "tools": [{"type": "function"}]}), 400, "tools"
    )
    img = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
    assert_error(http.post("/v1/chat/completions", json={**base, "messages": [img]}), 400)


def test_unknown_route_and_method(http: httpx.Client) -> None:
    assert_error(http.get("/v1/nothing"), 404)
    assert_error(http.get("/v1/completions"), 405)


def test_garbage_never_crashes_and_leaves_no_block(server: ServerProcess, http: httpx.Client) -> None:
    bodies = [
        b"",
        b"null",
        b"\xff\xfe",
        b'{"model": null}',
        b'{"model": "smollm2-135m", "prompt": [1, "a"]}',
        b'{"model": "smollm2-135m", "prompt": "x", "n": 1e9}',
        b'{"model": "smollm2-135m", "prompt": "x", "stream": "maybe"}',
        b'{"model": "smollm2-135m", "messages": [{"role": 5}]}',
    ]
    for path in ("/v1/completions", "/v1/chat/completions"):
        for b in bodies:
            r = http.post(path, content=b, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (path, b, r.status_code, r.text)
    h = server.wait_idle()
    assert h["free_blocks"] == h["num_blocks"] and h["in_flight"] == 0, h
    assert http.post("/v1/completions", json=completion()).status_code == 200


def test_issue17_reproducers_on_the_real_model(server: ServerProcess, http: httpx.Client) -> None:
    """Each bad request gets a 4xx (or is clamped and served) while another stream goes on."""
    body = completion(prompt="Count slowly:", max_tokens=24, ignore_eos=True, stream=True)
    with http.stream("POST", "/v1/completions", json=body) as live:
        lines = live.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        r = http.post("/v1/completions", json=completion(top_k=10**20, max_tokens=2))
        assert r.status_code == 200, r.text
        assert_error(http.post("/v1/completions", json=completion(stop_token_ids=[10**9], min_tokens=1)), 400,
                     "stop_token_ids")
        raw = '{"model": "%s", "prompt": "a\\ud800b", "max_tokens": 2}' % MODEL  # noqa: UP031
        assert_error(http.post("/v1/completions", content=raw, headers={"content-type": "application/json"}),
                     400, "prompt")
        deep = "[" * 100_000 + "]" * 100_000
        assert_error(http.post("/v1/completions", content='{"prompt": %s}' % deep,  # noqa: UP031
                               headers={"content-type": "application/json"}), 400)
        rest = [line for line in lines if line.startswith("data:")]
    assert rest[-1] == "data: [DONE]" and not any('"error"' in x for x in rest)
    h = server.wait_idle()
    assert h["free_blocks"] == h["num_blocks"] and h["status"] == "ok"
    assert "Traceback" not in server.log
