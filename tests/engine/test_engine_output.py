"""The engine's outputs and records (:mod:`kvlab.engine_output`): text tracks the ids as they
stream, the record matches the finished request, and no text state outlives its request."""

from __future__ import annotations

from kvlab.engine_output import OutputBuilder
from kvlab.request import SamplingParams


def _decode(ids) -> str:
    return "".join(f"<{t}>" for t in ids)


def test_streamed_text_matches_ids_and_state_is_dropped_on_finish_and_abort(engine_factory):
    eng, _ = engine_factory(num_blocks=64)
    eng._outputs = OutputBuilder(_decode)
    kept = eng.add_request([1, 2, 3], SamplingParams(max_tokens=6, ignore_eos=True))
    dropped = eng.add_request([4, 5, 6], SamplingParams(max_tokens=50, ignore_eos=True))
    seen = 0
    while eng.has_unfinished_requests():
        for out in eng.step():
            c = out.outputs[0]
            assert c.text == _decode(c.token_ids)
            seen += 1
        if eng.num_steps == 3:
            assert len(eng._outputs) == 2  # both requests have streamed text
            eng.abort_request(dropped.request_id)
    assert seen > 3
    assert len(eng._outputs) == 0  # finished and aborted requests left no text state
    rec = next(r for r in eng.request_records if r.request_id == kept.request_id)
    assert rec.output_len == 6 and rec.prompt_len == 3 and rec.finish_reason == "length"
    assert len(rec.token_times) == 6
    aborted = next(r for r in eng.request_records if r.request_id == dropped.request_id)
    assert aborted.finish_reason == "abort" and aborted.output_len < 50
