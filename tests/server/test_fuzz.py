"""Property-based fuzzing of both generation endpoints from the server's own request schema.

The rule, for any body: the server answers with a status below 500 (an OpenAI error body for
4xx), a 200 stream ends with ``[DONE]``, and afterwards the server is healthy with every block
free. Runs on the in-process server (real app, engine loop and tokenizer; fake model steps), so a
few hundred requests take seconds. Generation lengths are drawn small (``max_tokens`` etc. are
otherwise free: huge values must be refused, not served).
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvlab.server.protocol import ChatCompletionRequest, CompletionRequest
from tests.server.conftest import MODEL
from tests.server.inproc import InProcServer, inproc_server
from tests.server.schema_strategies import INTS, ODD_TEXT, request_bodies

pytestmark = pytest.mark.xdist_group("server-fuzz")  # one worker: the fuzz is heavy on 2 cores

SMALL = st.one_of(st.integers(-2, 6), st.integers(1, 6), st.none(), INTS.filter(lambda v: v > 10**6 or v < 0))
COMMON = {
    "model": st.one_of(st.just(MODEL), st.just(MODEL), st.text(max_size=6)),
    "max_tokens": SMALL,
    "n": st.one_of(st.integers(-1, 4), INTS.filter(lambda v: v > 64 or v < 1)),
    "stream": st.booleans(),
}
SAMPLING = {  # servable values, sometimes at the edges
    "max_tokens": st.integers(1, 6),
    "n": st.integers(1, 3),
    "stream": st.booleans(),
    "temperature": st.one_of(st.none(), st.floats(0, 2)),
    "top_p": st.one_of(st.none(), st.floats(0.01, 1)),
    "top_k": st.one_of(st.integers(-1, 50), st.sampled_from([10**20, 49152, 49153])),
    "seed": st.one_of(st.none(), st.integers(-(2**70), 2**70)),
    "stop": st.one_of(st.none(), st.text(min_size=1, max_size=3), st.lists(st.text(min_size=1, max_size=3),
                                                                             max_size=2)),
    "min_tokens": st.integers(0, 3),
    "ignore_eos": st.booleans(),
    "stop_token_ids": st.one_of(st.none(), st.lists(st.integers(0, 49151), max_size=2)),
}
PROMPTS = st.one_of(st.text(min_size=1, max_size=40), ODD_TEXT.filter(bool),
                    st.lists(st.integers(0, 49151), min_size=1, max_size=6))
PLAUSIBLE_COMPLETION = st.fixed_dictionaries({"model": st.just(MODEL), "prompt": PROMPTS},
                                             optional={**SAMPLING, "logprobs": st.integers(0, 5)})
PLAUSIBLE_CHAT = st.fixed_dictionaries(
    {"model": st.just(MODEL),
     "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                                                 "content": st.one_of(st.text(max_size=30), ODD_TEXT)}),
                          min_size=1, max_size=3)},
    optional={**SAMPLING, "logprobs": st.booleans(), "top_logprobs": st.integers(0, 5),
              "max_completion_tokens": st.integers(1, 6)})
COMPLETION = request_bodies(CompletionRequest, {
    **COMMON,
    "prompt": st.one_of(st.text(max_size=40), ODD_TEXT, st.lists(st.integers(-5, 60_000), max_size=6),
                        st.lists(st.text(max_size=10), max_size=2),
                        st.lists(st.lists(st.integers(0, 50_000), max_size=4), max_size=2)),
}, PLAUSIBLE_COMPLETION)
CHAT = request_bodies(ChatCompletionRequest, {**COMMON, "max_completion_tokens": SMALL}, PLAUSIBLE_CHAT)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def srv(tokenizer):
    with inproc_server(tokenizer) as s:
        yield s


def send(srv: InProcServer, path: str, body: dict) -> None:
    raw = json.dumps(body)  # lone surrogates travel as \\udxxx escapes, as a client would send them
    with httpx.stream("POST", srv.base + path, content=raw, headers={"content-type": "application/json"},
                      timeout=30) as r:
        text = "".join(r.iter_text())
    assert r.status_code < 500, (r.status_code, text[:500], raw[:500])
    if r.status_code >= 400:
        err = json.loads(text)["error"]
        assert err["message"] and set(err) == {"message", "type", "param", "code"}
    elif r.headers.get("content-type", "").startswith("text/event-stream"):
        events = [ln for ln in text.splitlines() if ln.startswith("data:")]
        assert events[-1] == "data: [DONE]", text[-300:]
        assert not any('"error"' in e for e in events), text[:500]


def assert_healthy_and_empty(srv: InProcServer) -> None:
    h = srv.wait_idle(timeout=20)
    assert h["status"] == "ok" and h["in_flight"] == 0 and h["free_blocks"] == h["num_blocks"], h
    assert srv.aengine.engine.allocator.num_free_blocks() == srv.aengine.engine.allocator.num_blocks


def test_fuzz_both_endpoints_then_the_server_is_healthy_and_every_block_free(srv: InProcServer) -> None:
    """Both fuzzers, then the health check, in ONE test: the check must see the server the fuzz used
    (separate tests could be split by other modules' tests on the same xdist worker, and a module
    fixture would then hand the last test a fresh server)."""

    @SETTINGS
    @given(body=COMPLETION)
    def completions(body: dict) -> None:
        send(srv, "/v1/completions", body)

    @SETTINGS
    @given(body=CHAT)
    def chats(body: dict) -> None:
        send(srv, "/v1/chat/completions", body)

    completions()
    chats()
    assert_healthy_and_empty(srv)
    m = httpx.get(srv.base + "/metrics", timeout=10).text
    served = sum(float(ln.split()[-1]) for ln in m.splitlines() if ln.startswith("kvlab:request_success_total"))
    rejected = sum(float(ln.split()[-1]) for ln in m.splitlines() if ln.startswith("kvlab:request_rejected_total"))
    assert served > 10 and rejected > 10  # the fuzz reached the engine and the validators, both often
