"""Replay: the cache simulator, Belady's optimum as a ceiling, and the command's outputs."""

from __future__ import annotations

import random

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.allocator.eviction import EVICTION
from kvlab.replay.__main__ import main
from kvlab.replay.simulate import belady, simulate_policy
from kvlab.replay.trace import BlockTrace, trace_from_prompts


def random_trace(seed: int, n: int = 120, bs: int = 2) -> BlockTrace:
    """Prompts drawn from a few shared prefixes with random continuations (a prefix-cache mix)."""
    rng = random.Random(seed)
    stems = [[rng.randrange(50) for _ in range(rng.randrange(2, 14))] for _ in range(5)]
    prompts = []
    for _ in range(n):
        p = list(rng.choice(stems)) + [rng.randrange(4) for _ in range(rng.randrange(0, 10))]
        prompts.append(p)
    return trace_from_prompts(prompts, bs)


def test_trace_ids_name_the_whole_prefix():
    t = trace_from_prompts([[1, 2, 3, 4, 5], [1, 2, 3, 4, 9, 9], [7, 2, 3, 4, 5]], 2)
    a, b, c = t.accesses
    assert a == [0, 1] and b == [0, 1]  # (5 - 1) // 2 = 2 blocks; (6 - 1) // 2 = 2 blocks
    assert c[1] != a[1]  # same tokens [3, 4], different prefix: different id
    assert t.parent[1] == 0 and t.depth[1] == 1 and t.compulsory_hits() == 2


def test_lru_hits_by_hand():
    # three prompts of 2 blocks: A, B, A with a 2-block cache: LRU evicts A's blocks for B
    t = trace_from_prompts([[1, 1, 2, 2, 0], [3, 3, 4, 4, 0], [1, 1, 2, 2, 0]], 2)
    assert simulate_policy(t, 2, "lru").hits == 0
    assert simulate_policy(t, 4, "lru").hits == 2
    assert belady(t, 2).hits == 2  # bypass B: keep A
    assert belady(t, 4).hits == 2


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), capacity=st.integers(1, 60))
def test_no_policy_beats_belady(seed, capacity):
    t = random_trace(seed)
    best = belady(t, capacity).hits
    for name in EVICTION.names():
        got = simulate_policy(t, capacity, name).hits
        assert got <= best, f"{name} {got} > Belady {best} at capacity {capacity}"


@pytest.mark.parametrize("name", EVICTION.names())
def test_every_policy_reaches_the_compulsory_bound_with_room_for_everything(name):
    t = random_trace(3)
    assert simulate_policy(t, t.num_blocks, name).hits == belady(t, t.num_blocks).hits == t.compulsory_hits()


def test_command_writes_table_plot_config_manifest(tmp_path, capsys):
    out = tmp_path / "r"
    rc = main(["workload=shared_prefix", "workload.num_requests=40", "capacities=2,8,64",
               "policies=lru,fifo", f"out={out}"])
    assert rc == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"results: {out}"
    d = pd.read_csv(out / "hit_rates.csv")
    assert set(d["policy"]) == {"belady", "lru", "fifo"} and sorted(set(d["capacity_blocks"])) == [2, 8, 64]
    for _cap, g in d.groupby("capacity_blocks"):
        assert (g["hits"] <= g[g["policy"] == "belady"]["hits"].iloc[0]).all()
    assert d["hit_rate"].max() > 0.5  # the shared 80-token prefix hits
    for f in ("hit_rates.png", "config.json", "manifest.json", "trace_stats.json"):
        assert (out / f).stat().st_size > 0


def test_saved_trace_replays_the_same(tmp_path):
    out = tmp_path / "a"
    assert main(["workload=few_shot", "workload.num_requests=30", "capacities=4,16", "save_trace=true",
                 f"out={out}"]) == 0
    t = BlockTrace.load(out / "trace.json")
    assert t.num_accesses == pd.read_csv(out / "hit_rates.csv")["accesses"].iloc[0]
    assert main([f"trace={out / 'trace.json'}", "capacities=4,16", f"out={tmp_path / 'b'}"]) == 0
    cols = ["capacity_blocks", "policy", "hits"]
    assert pd.read_csv(out / "hit_rates.csv")[cols].equals(pd.read_csv(tmp_path / "b" / "hit_rates.csv")[cols])


@pytest.mark.parametrize("args,needle", [
    (["policies=lru,mru"], "policies: 'mru' is unknown; choose from:"),
    (["source=disk"], "source='disk' is unknown; choose one of: workload, run"),
    (["capacity=3"], "unknown key 'capacity'"),
])
def test_bad_arguments_name_the_key(args, needle, capsys, tmp_path):
    assert main([*args, f"out={tmp_path}/x"]) == 2
    assert needle in capsys.readouterr().err
