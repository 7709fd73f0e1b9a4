"""SimExecutor: factory from config, protocol behaviour, sampling determinism, errors.

Its speed is a benchmark (benchmarks/test_sim_bench.py), not a timed unit test."""

from __future__ import annotations

import pytest

from kvlab.executor import EXECUTORS
from kvlab.executor.base import ScheduledSeq, StepInput
from kvlab.executor.sim import SimExecutor, build_sim_executor
from kvlab.request import SamplingParams
from tests.sim.conftest import sim_cfg


def seq(i: int, num: int, start: int, samples: int = 1, beam: bool = False, **sp: object) -> ScheduledSeq:
    return ScheduledSeq(seq_id=i, request_id=f"r{i}", token_ids=[5] * num, start_pos=start,
                        block_table=list(range(-(-(start + num) // 16))), num_samples=samples,
                        sampling=SamplingParams(**sp), beam=beam)


def make(seed: int = 0, **kv: object) -> SimExecutor:
    cfg = sim_cfg(**kv)
    cfg["seed"] = seed
    ex = EXECUTORS.build("sim", cfg)
    ex.init_cache(ex.kv_capacity_blocks(16), ex.cpu_capacity_blocks(16), 16)
    return ex


def test_factory_and_protocol_fields() -> None:
    ex = make()
    assert isinstance(ex, SimExecutor) and ex.eos_token_id is None and ex.max_model_len == 2048
    assert ex.kv_bytes_per_block(16) == 16 * 819_200
    assert 800 < ex.kv_capacity_blocks(16) < 1000  # ~13.2K slots at the root config's 0.9
    assert make(max_model_len=1024).max_model_len == 1024


def test_execute_samples_and_durations() -> None:
    ex = make()
    out = ex.execute(StepInput([seq(0, 100, 0), seq(1, 1, 300), seq(2, 50, 0, samples=0)]))
    assert set(out.samples) == {0, 1, 2} and out.samples[2] == []
    assert len(out.samples[0]) == 1 and out.duration_s > 0 and out.swap_time_s == 0
    par = ex.execute(StepInput([seq(0, 10, 0, samples=4, n=4)]))
    assert len(par.samples[0]) == 4
    swap = ex.execute(StepInput([seq(0, 1, 300)], blocks_to_swap_out=[(1, 1), (2, 2)]))
    assert 0 < swap.swap_time_s < swap.duration_s


def test_beam_candidates_descend_and_are_distinct() -> None:
    ex = make()
    step = StepInput([seq(0, 1, 20, samples=8, beam=True, beam_width=4, temperature=0)])
    cands = ex.execute(step).samples[0]
    lps = [c.logprob for c in cands]
    assert len(cands) == 8 and lps == sorted(lps, reverse=True)
    assert len({c.token_id for c in cands}) == 8


def test_deterministic_for_a_seed_and_never_stop_tokens() -> None:
    def run(seed: int) -> list[int]:
        ex = make(seed)
        stop = list(range(4, 40000))
        steps = [StepInput([seq(0, 1, 10 + i, stop_token_ids=stop)]) for i in range(50)]
        return [ex.execute(st).samples[0][0].token_id for st in steps]
    a, b = run(1), run(1)
    assert a == b and run(2) != a
    assert all(t >= 40000 for t in a)


def test_logprobs_requested() -> None:
    s = make().execute(StepInput([seq(0, 1, 5, logprobs=3)])).samples[0][0]
    assert s.top_logprobs is not None and s.token_id in s.top_logprobs


def test_execute_before_init_cache_fails() -> None:
    ex = build_sim_executor(sim_cfg())
    with pytest.raises(RuntimeError, match="init_cache"):
        ex.execute(StepInput([seq(0, 1, 1)]))


def test_microbenchmarks() -> None:
    ex = make()
    assert ex.swap_time_s(32, 16) > ex.swap_time_s(16, 16) > 0
    assert ex.swap_time_s(512, 1) > ex.swap_time_s(2, 256)  # same 512 tokens, tiny blocks slower
    assert ex.prefill_time_s(512) > ex.prefill_time_s(64) > 0


@pytest.mark.parametrize(("group", "key", "value", "match"), [
    ("model", "num_layerz", 3, "unknown key"),
    ("model", "num_layers", -1, "num_layers"),
    ("model", "arch", "gpt", "arch"),
    ("model", "num_params", 1e9, "num_params"),
    ("hardware", "peak_tflop", 1, "unknown key"),
    ("hardware", "mem_bandwidth_gb_s", -5, "mem_bandwidth_gb_s"),
    ("hardware", "bw_efficiency", 1.5, "bw_efficiency"),
    ("kv", "swap_space_gib", -1.0, "swap_space_gib"),
    ("kv", "gpu_memory_utilization", 0.0, "gpu_memory_utilization"),
])
def test_bad_config_is_a_clear_error(group: str, key: str, value: object, match: str) -> None:
    cfg = sim_cfg()
    cfg[group][key] = value
    with pytest.raises(ValueError, match=match):
        build_sim_executor(cfg)


def test_missing_hardware_key() -> None:
    cfg = sim_cfg()
    del cfg["hardware"]["pcie_gb_s"]
    with pytest.raises(ValueError, match="pcie_gb_s"):
        build_sim_executor(cfg)
