"""compute_metrics on hand-built records with answers worked out by hand."""

from __future__ import annotations

import math

import pytest

from kvlab.metrics import METRIC_KEYS, compute_metrics, read_metrics_json, summarize, write_metrics_json
from kvlab.records import RequestRecord, StepRecord


def req(rid, arrival, token_times, prompt_len=10, **kw) -> RequestRecord:
    out = len(token_times)
    return RequestRecord(
        request_id=rid, arrival_time=arrival, first_scheduled_time=arrival,
        first_token_time=token_times[0] if token_times else None,
        finish_time=token_times[-1] if token_times else None, prompt_len=prompt_len, output_len=out,
        total_output_tokens=kw.pop("total_output_tokens", out), num_seqs=1,
        num_preemptions=kw.pop("num_preemptions", 0), num_cached_tokens=kw.pop("num_cached_tokens", 0),
        finish_reason="length" if token_times else None, token_times=list(token_times), **kw)


def step(i, time, duration, running, token_states, reservation=0, internal=0, external=0, total=100,
         logical=0, physical=0, swapped_out=0, swapped_in=0) -> StepRecord:
    return StepRecord(
        step=i, time=time, duration_s=duration, num_running=running, num_waiting=0, num_swapped=0,
        num_running_seqs=running, num_batched_tokens=running, num_prefill_tokens=0, num_decode_tokens=running,
        num_preempted=0, swapped_out_blocks=swapped_out, swapped_in_blocks=swapped_in, swap_time_s=0.0,
        total_slots=total, token_states=token_states, reservation=reservation, internal_frag=internal,
        external_frag=external, free_slots=total - token_states - reservation - internal,
        logical_blocks=logical, physical_blocks=physical, shared_saved_slots=0)


# A: arrives 0, tokens at 1, 2, 4 -> TTFT 1 s, E2EL 4 s, TPOT (4-1)/2 = 1.5 s, ITL 1, 2.
# B: arrives 1, tokens at 3, 3.5 -> TTFT 2 s, E2EL 2.5 s, TPOT 0.5 s, ITL 0.5.
REQS = [req("a", 0.0, [1.0, 2.0, 4.0], prompt_len=10, num_cached_tokens=4, num_preemptions=1,
            total_output_tokens=6),
        req("b", 1.0, [3.0, 3.5], prompt_len=30, num_cached_tokens=0)]
# Step 1 lasts 3 s with 50% token states; step 2 lasts 1 s with 90%: time average 0.6, step mean 0.7.
STEPS = [step(0, 3.0, 3.0, running=1, token_states=50, reservation=20, internal=10, external=20,
              logical=10, physical=8, swapped_out=2),
         step(1, 4.0, 1.0, running=3, token_states=90, external=10, logical=4, physical=4, swapped_in=2)]


def compute(requests=REQS, steps=STEPS, **kw):
    args = {"kv_capacity_tokens": 100, "price_per_hour": 3.6, "num_gpus": 2, **kw}
    return compute_metrics(requests, steps, **args)


def test_keys_are_exactly_the_documented_set():
    assert list(compute()) == list(METRIC_KEYS)
    assert {"mean_ttft_ms", "p99_itl_ms", "median_tpot_ms", "p90_e2el_ms"} <= set(METRIC_KEYS)


def test_latencies_follow_vllm_bench_definitions():
    m = compute()
    assert m["mean_ttft_ms"] == pytest.approx(1500.0) and m["median_ttft_ms"] == pytest.approx(1500.0)
    assert m["mean_tpot_ms"] == pytest.approx(1000.0)  # (1500 + 500) / 2
    assert m["mean_itl_ms"] == pytest.approx((1000 + 2000 + 500) / 3)  # pooled gaps
    assert m["p99_itl_ms"] == pytest.approx(1000 + 0.98 * 1000)  # np.percentile (linear) of 500, 1000, 2000
    assert m["mean_e2el_ms"] == pytest.approx(3250.0)
    assert m["normalized_latency_s_per_token"] == pytest.approx((4 / 3 + 2.5 / 2) / 2)


def test_throughput_duration_and_cost():
    m = compute()
    assert m["duration_s"] == pytest.approx(4.0)  # first arrival 0 -> last finish 4
    assert m["num_requests"] == 2 and m["num_finished"] == 2
    assert m["request_throughput"] == pytest.approx(0.5)
    assert m["output_throughput"] == pytest.approx((6 + 2) / 4)  # all sequences' tokens
    assert m["total_token_throughput"] == pytest.approx((6 + 2 + 40) / 4)
    # 3.6 $/h/GPU x 2 GPUs x 4 s = 0.008 $ for 8 tokens -> 1000 $ per 1M tokens
    assert m["cost_per_million_output_tokens"] == pytest.approx(1000.0)


def test_memory_is_time_averaged_and_batch_is_step_averaged():
    m = compute()
    assert m["mem_token_states_ratio"] == pytest.approx((0.5 * 3 + 0.9 * 1) / 4)
    assert m["mem_reservation_ratio"] == pytest.approx(0.2 * 3 / 4)
    assert m["mem_internal_frag_ratio"] == pytest.approx(0.1 * 3 / 4)
    assert m["mem_external_frag_ratio"] == pytest.approx((0.2 * 3 + 0.1) / 4)
    assert m["mem_free_ratio"] == pytest.approx((0.2 * 3 + 0.1) / 4)  # here all of "external" is free
    assert m["mean_batched_requests"] == pytest.approx(2.0)
    assert m["sharing_saved_ratio"] == pytest.approx((0.2 * 3 + 0.0 * 1) / 4)
    assert m["kv_capacity_tokens"] == 100


def test_free_ratio_is_the_free_part_of_external_and_others():
    import dataclasses

    # step 0: 20 external slots, of which 5 free (the rest lost to placement or held by cached blocks)
    steps = [dataclasses.replace(STEPS[0], free_slots=5), STEPS[1]]
    m = compute(steps=steps)
    assert m["mem_free_ratio"] == pytest.approx((0.05 * 3 + 0.1) / 4)
    assert m["mem_free_ratio"] < m["mem_external_frag_ratio"]


def test_sharing_prefix_preemption_and_swap():
    m = compute(block_bytes=1000)
    assert m["prefix_hit_rate"] == pytest.approx(4 / 40)
    assert m["num_preemptions"] == 1
    assert m["swapped_bytes"] == pytest.approx(4 * 1000)
    assert compute(kv_bytes_per_token=10, block_size=16)["swapped_bytes"] == pytest.approx(4 * 160)
    assert math.isnan(compute()["swapped_bytes"])  # swaps happened but block size unknown
    no_swap = [step(0, 1.0, 1.0, running=1, token_states=10)]
    assert compute(steps=no_swap)["swapped_bytes"] == 0.0


def test_warmup_drops_early_requests_and_steps():
    m = compute(warmup_s=0.5)  # drops request a (arrival 0); window starts at 0.5
    assert m["num_requests"] == 1 and m["mean_ttft_ms"] == pytest.approx(2000.0)
    assert m["duration_s"] == pytest.approx(3.0)


def test_zero_duration_steps_fall_back_to_plain_mean():
    steps = [step(0, 1.0, 0.0, running=1, token_states=20), step(1, 1.0, 0.0, running=1, token_states=40)]
    assert compute(steps=steps)["mem_token_states_ratio"] == pytest.approx(0.3)


def test_empty_and_unfinished_inputs_give_nan_not_errors():
    m = compute([], [])
    assert list(m) == list(METRIC_KEYS)
    assert m["num_requests"] == 0 and math.isnan(m["request_throughput"]) and math.isnan(m["mean_ttft_ms"])
    unfinished = [req("u", 0.0, [])]
    m = compute(unfinished, STEPS)
    assert m["num_requests"] == 1 and m["num_finished"] == 0
    assert math.isnan(m["normalized_latency_s_per_token"]) and math.isnan(m["cost_per_million_output_tokens"])
    assert m["mem_token_states_ratio"] == pytest.approx(0.6)  # steps still count
    single = compute([req("s", 0.0, [1.0])], [])
    assert math.isnan(single["mean_tpot_ms"]) and math.isnan(single["mean_itl_ms"])
    assert single["mean_ttft_ms"] == pytest.approx(1000.0)


def test_summary_and_json_round_trip(tmp_path):
    m = compute([], [])
    text = summarize(m)
    assert "n/a" in text and "TTFT" in text
    assert "norm. latency" in summarize(compute())
    write_metrics_json(compute(), tmp_path / "metrics.json")
    back = read_metrics_json(tmp_path / "metrics.json")
    assert back["mean_ttft_ms"] == pytest.approx(1500.0) and math.isnan(back["swapped_bytes"])
