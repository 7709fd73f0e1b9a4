"""The server driven by the official ``openai`` client: completions, chat, streaming, n, stop,
seeds, logprobs, a 32-client streaming load test, /metrics, and a client that disconnects."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import MODEL, ServerProcess, start_server

PROMPT = "Hello, my name is"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    yield from start_server(tmp_path_factory, "api", [])


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_startup_banner_and_models(server: ServerProcess, client: openai.OpenAI) -> None:
    log = server.log
    for word in (server.base.removeprefix("http://"), MODEL, "allocator  paged", "KV cache"):
        assert word in log
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_completion_text_and_usage(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    assert r.object == "text_completion" and len(r.choices) == 1
    assert r.choices[0].text and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 6 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 6
    assert r.usage.prompt_tokens_details.cached_tokens == 0


def test_completion_token_ids_prompt(client: openai.OpenAI) -> None:
    r = client.completions.create(
        model=MODEL,
        prompt=[504, 3458, 28, 957, 1462, 314],
        max_tokens=4,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert r.usage.prompt_tokens == 6 and r.usage.completion_tokens == 4


def test_chat_and_max_completion_tokens(client: openai.OpenAI) -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_completion_tokens=5, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.usage.completion_tokens <= 5


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": "Name a colour."}]
    kw = dict(model=MODEL, messages=msgs, max_tokens=6, temperature=0)
    full = client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1


def test_completion_stream_equals_non_stream(client: openai.OpenAI) -> None:
    kw = dict(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    full = client.completions.create(**kw).choices[0].text
    parts = [c.choices[0].text for c in client.completions.create(**kw, stream=True) if c.choices]
    assert "".join(parts) == full and len(parts) > 1


def test_n_equals_two(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, n=2, temperature=1.0, seed=7)
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert r.usage.completion_tokens == sum(1 for _ in range(2)) * 5


def test_stop_string_truncates_in_both_modes(client: openai.OpenAI) -> None:
    base = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0).choices[0].text
    assert "," in base, base  # greedy SmolLM2 continues " Alex, and I'm ..."
    expected = base[: base.index(",")]
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0, stop=[","])
    assert r.choices[0].text == expected and r.choices[0].finish_reason == "stop"
    parts = [
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0, stop=[","], stream=True
        )
        if c.choices
    ]
    assert "".join(parts) == expected


def test_seed_reproducibility(client: openai.OpenAI) -> None:
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=1.0, top_p=0.95)
    a = client.completions.create(**kw, seed=1234).choices[0].text
    b = client.completions.create(**kw, seed=1234).choices[0].text
    assert a == b
    msgs = [{"role": "user", "content": "Tell me a story."}]
    c1 = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, seed=99)
    c2 = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, seed=99)
    assert c1.choices[0].message.content == c2.choices[0].message.content


def test_completion_logprobs(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert all(x <= 0 for x in lp.token_logprobs)
    assert all(len(t) >= 2 for t in lp.top_logprobs)
    assert "".join(lp.tokens) == r.choices[0].text


def test_chat_logprobs(client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    r = client.chat.completions.create(
        model=MODEL, messages=msgs, max_tokens=3, temperature=0, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for tok in content:
        assert len(tok.top_logprobs) == 3 and tok.logprob <= 0
        assert tok.top_logprobs[0].logprob >= tok.top_logprobs[-1].logprob
        assert tok.logprob == pytest.approx(tok.top_logprobs[0].logprob)  # greedy picks the top token


def test_load_32_concurrent_streams(server: ServerProcess) -> None:
    async def one(aclient: openai.AsyncOpenAI, i: int) -> int:
        stream = await aclient.completions.create(
            model=MODEL,
            prompt=f"Request {i}: the weather today is",
            max_tokens=16,
            temperature=0.8,
            seed=i,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        text = [c.choices[0].text async for c in stream if c.choices]
        return len(text)

    async def run() -> list[int | BaseException]:
        async with openai.AsyncOpenAI(
            base_url=server.base + "/v1", api_key="x", max_retries=0, timeout=180
        ) as ac:
            return await asyncio.gather(*(one(ac, i) for i in range(32)), return_exceptions=True)

    results = asyncio.run(run())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert all(isinstance(r, int) and r >= 1 for r in results)
    h = server.wait_idle()
    assert h["free_blocks"] == h["num_blocks"] and h["in_flight"] == 0, h


def _metrics(server: ServerProcess) -> dict[str, float]:
    text = httpx.get(server.base + "/metrics", timeout=10).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + (
                "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}" if s.labels else ""
            )
            out[key] = s.value
    return out


def test_metrics_parse_and_move(server: ServerProcess, client: openai.OpenAI) -> None:
    before = _metrics(server)
    for name in (
        "kvlab:kv_cache_usage_perc",
        "kvlab:num_requests_running",
        "kvlab:num_requests_waiting",
        "kvlab:num_requests_swapped",
        "kvlab:prefix_cache_hit_rate",
        "kvlab:num_preemptions_total",
        "kvlab:kv_cache_memory_slots{category=token_states}",
        "kvlab:kv_cache_memory_slots{category=external_frag}",
    ):
        assert name in before, name
    client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, temperature=0)
    after = _metrics(server)
    assert after["kvlab:prompt_tokens_total"] > before.get("kvlab:prompt_tokens_total", 0)
    assert after["kvlab:generation_tokens_total"] >= before.get("kvlab:generation_tokens_total", 0) + 3
    for hist in (
        "time_to_first_token_seconds",
        "time_per_output_token_seconds",
        "e2e_request_latency_seconds",
    ):
        assert after[f"kvlab:{hist}_count"] > before.get(f"kvlab:{hist}_count", 0)
    assert after["kvlab:kv_cache_usage_perc"] == 0.0


def test_disconnect_mid_stream_frees_blocks(server: ServerProcess) -> None:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 400, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", server.base + "/v1/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = [line for line, _ in zip(lines, range(6)) if line.startswith("data:")]
            assert got
            during = server.health()
            assert during["free_blocks"] < during["num_blocks"] and during["in_flight"] == 1
        # leaving the block closes the connection mid-stream
    h = server.wait_idle(timeout=10)
    assert h["free_blocks"] == h["num_blocks"] and h["in_flight"] == 0, h
    assert _metrics(server)["kvlab:request_aborted_total"] >= 1
