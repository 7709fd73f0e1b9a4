"""Per-operation cost of each allocator, measured the way vLLM's block-pool benchmark does.

Run: ``.venv/bin/pytest benchmarks/test_allocator_bench.py --benchmark-enable``. Scenario: 1,000
resident requests of 2,000 random tokens, block size 16, a 135,000-block pool, ``gc.freeze()``
after the setup, one timer pair per call (``pedantic``, ``iterations=1``). Two access patterns:

- ``cycle``: each round works on the NEXT resident request (1,000 different tables, cold caches),
  as a serving step does;
- ``repeat``: the same call on one request, as the original benchmarks timed it.

Every benchmark asserts that the timed call did the work it is named after (a "new block" decode
really allocated one block, a free really released 125 blocks, a full hit really hit 124 blocks,
an admission really attached the hit and allocated the last block). Setup work between rounds
(appending a token, freeing what the previous round allocated) is outside the timer.
"""

from __future__ import annotations

import gc
import itertools
import random

import pytest

from kvlab.allocator import ALLOCATORS
from kvlab.request import Request, SamplingParams

pytestmark = pytest.mark.benchmark

BS = 16
N_RUNNING = 1000
PROMPT = 2000
NUM_BLOCKS = 135_000
HIT_BLOCKS = (PROMPT - 1) // BS  # 124: the last token is always computed
ROUNDS = 1000
_ids = itertools.count()

CONFIGS = {
    "contiguous": ("contiguous", {"reservation": "max", "placement": "first_fit"}),
    "paged": ("paged", {}),
    "prefix-hash": ("prefix", {"index": "hash"}),
    "prefix-hash-sha256": ("prefix", {"index": "hash", "hash_fn": "sha256"}),
    "prefix-radix": ("prefix", {"index": "radix"}),
}


def new_seq(prompt: list[int]):
    req = Request(f"b{next(_ids)}", prompt, SamplingParams(max_tokens=48), expected_output_len=48)
    return req.seqs[0]


def loaded(key: str):
    """An allocator holding 1,000 running 2,000-token requests with random, distinct prompts."""
    name, opts = CONFIGS[key]
    alloc = ALLOCATORS.build(name, NUM_BLOCKS, BS, 2048, **opts)
    rng = random.Random(0)
    seqs = []
    for _ in range(N_RUNNING):
        seq = new_seq([rng.randrange(100, 50_000) for _ in range(PROMPT)])
        assert alloc.allocate_slots(seq, PROMPT, alloc.get_computed_blocks(seq)) is not None
        seq.num_computed_tokens = PROMPT
        seqs.append(seq)
    gc.collect()
    gc.freeze()
    return alloc, seqs


@pytest.fixture(scope="module", params=list(CONFIGS))
def setup(request):
    alloc, seqs = loaded(request.param)
    yield request.param, alloc, seqs
    gc.unfreeze()


def readmit(alloc, seq) -> None:
    """Admit a freed sequence again (untimed), through the prefix cache as the scheduler would."""
    seq.num_computed_tokens = 0
    computed = alloc.get_computed_blocks(seq)
    assert alloc.allocate_slots(seq, seq.num_tokens - computed[1], computed) is not None
    seq.num_computed_tokens = seq.num_tokens


def _advance_to(alloc, seq, boundary: bool) -> None:
    """Decode (untimed) until the next token starts a new block (``boundary``) or fits the last one.
    A sequence close to ``max_model_len`` is first cut back to its prompt and re-admitted."""
    if seq.num_tokens > 2048 - 2 * BS:
        alloc.free(seq)
        del seq.token_ids[PROMPT:]
        seq.block_hashes = None  # its tokens changed (the engine only ever appends)
        readmit(alloc, seq)
    while (seq.num_computed_tokens % BS == 0) != boundary:
        seq.token_ids.append(7)
        assert alloc.allocate_slots(seq, 1) is not None
        seq.num_computed_tokens += 1


def _decode_bench(benchmark, alloc, seqs, new_block: bool, cycle: bool) -> None:
    order = itertools.cycle(seqs if cycle else seqs[:1])
    prev: list = []  # (seq, table length before) of the previous round, checked in the next setup
    done = [0]

    def check_previous() -> None:
        if prev:
            seq, before = prev.pop()
            assert len(alloc.block_table(seq)) == before + (1 if new_block else 0), "did not do the work"
            seq.num_computed_tokens += 1
            done[0] += 1

    def next_round():
        check_previous()
        seq = next(order)
        _advance_to(alloc, seq, boundary=new_block)
        seq.token_ids.append(3)
        prev.append((seq, len(alloc.block_table(seq))))
        return (seq, 1), {}

    benchmark.pedantic(alloc.allocate_slots, setup=next_round, rounds=ROUNDS if cycle else 300, iterations=1)
    check_previous()
    assert done[0] >= 1


@pytest.mark.parametrize("cycle", [True, False], ids=["cycle", "repeat"])
def test_decode_in_block(benchmark, setup, cycle) -> None:
    """A decode token that fits the last block (15 of every 16 steps): no new block."""
    _decode_bench(benchmark, setup[1], setup[2], new_block=False, cycle=cycle)


@pytest.mark.parametrize("cycle", [True, False], ids=["cycle", "repeat"])
def test_decode_new_block(benchmark, setup, cycle) -> None:
    """A decode token that starts a new block: exactly one block is allocated (checked)."""
    name, alloc, seqs = setup
    if name == "contiguous":
        pytest.skip("contiguous reserved the block at admission: no allocation happens at decode")
    _decode_bench(benchmark, alloc, seqs, new_block=True, cycle=cycle)


def test_free_125_blocks(benchmark, setup) -> None:
    """Free a resident 2,000-token request (cycling), re-admitted untimed between rounds."""
    name, alloc, seqs = setup
    order = itertools.cycle(range(N_RUNNING))
    state: dict = {}

    def next_round():
        if state:  # check the previous free, then bring that request back
            seq, free_before, held = state.pop("seq"), state.pop("free"), state.pop("held")
            assert alloc.block_table(seq) == [] and alloc.num_free_blocks() == free_before + held
            readmit(alloc, seq)
        seq = seqs[next(order)]
        state.update(seq=seq, free=alloc.num_free_blocks(), held=len(alloc.block_table(seq)))
        return (seq,), {}

    benchmark.pedantic(alloc.free, setup=next_round, rounds=300, iterations=1)
    next_round()


def test_fork(benchmark, setup) -> None:
    name, alloc, seqs = setup
    children: list = []

    def make_child():
        for c in children:
            assert len(alloc.block_table(c)) == len(alloc.block_table(c.request.seqs[0])), "fork did nothing"
            alloc.free(c)
        children.clear()
        parent = seqs[10]
        children.append(parent.fork())
        return (parent, children[0]), {}

    if name == "contiguous":
        seqs[10].request.sampling_params.n = 2  # contiguous forks place a run: allow a second sequence
    benchmark.pedantic(alloc.fork, setup=make_child, rounds=300, iterations=1)
    make_child()
    for c in children:
        alloc.free(c)


@pytest.mark.parametrize("cycle", [True, False], ids=["cycle", "repeat"])
def test_full_prefix_hit_2000(benchmark, setup, cycle) -> None:
    """The prefix lookup of a fresh 2,000-token prompt equal to a resident one, hashing included
    (a new sequence each round for ``cycle``; ``repeat`` re-probes one sequence, whose hashes the
    hash index computed on the first call)."""
    name, alloc, seqs = setup
    order = itertools.cycle(seqs)
    probe = [new_seq(list(seqs[-1].token_ids[:PROMPT]))]
    want = HIT_BLOCKS if name.startswith("prefix") else 0
    # every resident's prompt is cached (and lookups are pure), so every timed call hits 124 blocks
    assert all(alloc.get_computed_blocks(new_seq(s.token_ids[:PROMPT]))[1] == want * BS for s in seqs)

    def next_round():
        if cycle:
            probe[0] = new_seq(list(next(order).token_ids[:PROMPT]))
        return (probe[0],), {}

    blocks, tokens = benchmark.pedantic(alloc.get_computed_blocks, setup=next_round,
                                        rounds=ROUNDS if cycle else 300, iterations=1)
    assert len(blocks) == want and tokens == want * BS


def test_admission_after_full_hit(benchmark, setup) -> None:
    """``allocate_slots`` of a fresh 2,000-token prompt right after its 124-block lookup (cycling
    over the residents): attaches the hit and allocates the one block for the last 16 tokens."""
    name, alloc, seqs = setup
    if not name.startswith("prefix"):
        pytest.skip("no prefix cache")
    order = itertools.cycle(seqs)
    prev: list = []

    def next_round():
        if prev:
            seq, hit = prev.pop()
            table = alloc.block_table(seq)
            assert len(table) == HIT_BLOCKS + 1 and table[:HIT_BLOCKS] == hit, "admission did not attach the hit"
            alloc.free(seq)
        seq = new_seq(list(next(order).token_ids[:PROMPT]))
        computed = alloc.get_computed_blocks(seq)
        assert len(computed[0]) == HIT_BLOCKS
        prev.append((seq, computed[0]))
        return (seq, PROMPT - computed[1], computed), {}

    benchmark.pedantic(alloc.allocate_slots, setup=next_round, rounds=ROUNDS, iterations=1)
    next_round()
    alloc.free(prev.pop()[0])
