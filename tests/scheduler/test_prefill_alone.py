"""vLLM v0's scheduling (``prefill_alone``): a step that starts prompts runs no decodes, and with
``max_paddings`` (v0.2.2-v0.2.7) a step's prompts are padded to the longest."""

from __future__ import annotations

import pytest
from helpers import chunk_ids, make, req, step


def test_a_step_that_starts_prompts_runs_no_decodes():
    s = make(num_blocks=16, chunked_prefill=False, prefill_alone=True)
    s.add_request(req("r0", [1] * 5, max_tokens=4))
    out, _ = step(s)
    assert chunk_ids(out) == [("r0", 5)]
    s.add_request(req("r1", [2] * 3, max_tokens=4, t=1.0))
    out, _ = step(s)
    assert chunk_ids(out) == [("r1", 3)] and out.num_decode_tokens == 0  # r0 waits a step
    out, _ = step(s)
    assert chunk_ids(out) == [("r0", 1), ("r1", 1)]


def test_mixed_steps_stay_the_default():
    s = make(num_blocks=16, chunked_prefill=False)
    s.add_request(req("r0", [1] * 5, max_tokens=4))
    step(s)
    s.add_request(req("r1", [2] * 3, max_tokens=4, t=1.0))
    out, _ = step(s)
    assert chunk_ids(out) == [("r0", 1), ("r1", 3)]


def test_decodes_run_when_no_waiting_prompt_can_start():
    """r1 cannot get its blocks (the watermark-free pool is full), so the step decodes instead."""
    s = make(num_blocks=4, block_size=4, chunked_prefill=False, prefill_alone=True)
    s.add_request(req("r0", [1] * 12, max_tokens=3))
    step(s)
    s.add_request(req("r1", [2] * 8, max_tokens=3, t=1.0))
    out, _ = step(s)
    assert chunk_ids(out) == [("r0", 1)]


def test_max_paddings_caps_the_padding_of_a_prompt_step():
    s = make(num_blocks=64, max_model_len=64, chunked_prefill=False, prefill_alone=True, max_paddings=4,
             max_num_batched_tokens=64)
    for i, n in enumerate((8, 6, 2, 9)):
        s.add_request(req(f"r{i}", [1] * n, t=float(i)))
    out, _ = step(s)
    # 8 + 6: padding 2; + 2: padding 2 + 6 = 8 > 4, so r2 (and r3 behind it) wait
    assert chunk_ids(out) == [("r0", 8), ("r1", 6)]
    out, _ = step(s)
    assert chunk_ids(out) == [("r2", 2)]  # 2 + 9 would pad 7


def test_padded_tokens_count_against_the_token_budget():
    s = make(num_blocks=64, max_model_len=20, chunked_prefill=False, prefill_alone=True, max_paddings=100,
             max_num_batched_tokens=20)
    for i, n in enumerate((9, 2, 2)):
        s.add_request(req(f"r{i}", [1] * n, t=float(i)))
    out, _ = step(s)
    assert chunk_ids(out) == [("r0", 9), ("r1", 2)]  # 3 x 9 = 27 padded tokens > 20, unpadded 13 fits


@pytest.mark.parametrize("options, word", [({"chunked_prefill": True, "prefill_alone": True}, "chunked_prefill"),
                                           ({"chunked_prefill": False, "max_paddings": 8}, "prefill_alone"),
                                           ({"chunked_prefill": False, "prefill_alone": True, "max_paddings": -1},
                                            ">= 0")])
def test_inconsistent_options_are_refused_by_name(options, word):
    with pytest.raises(ValueError, match=word):
        make(**options)
