"""Stateful property test: random admit / decode / fork / free / swap / preempt on every allocator
and, for ``prefix``, on every index x eviction policy.

Two allocators run every operation in lockstep and must give identical answers: built identically
(determinism: same ops -> same block ids), or — for ``prefix`` — one with the hash index and one
with the radix index (or builtin vs sha256 hashing) under the same policy, which checks that both
indexes return the same block-level matches on the same history. After every step the
allocator's own ``check_invariants`` runs (conservation, ref counts = holders, free queue = ref 0
except evictable cached blocks, sharing only by fork/prefix, report sums) plus the checks below
(prefix: every hit block holds the prompt's tokens, per a shadow of the KV); a ``None`` /
``MemoryError`` answer must leave a snapshot of the state unchanged.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kvlab.allocator import ALLOCATORS
from kvlab.allocator.eviction import EVICTION
from kvlab.request import Request, SamplingParams, Sequence

NUM_BLOCKS, BLOCK_SIZE, MAX_LEN, CPU_BLOCKS = 16, 4, 32, 12
BASE = list(range(100, 140))  # common prefix material, so the prefix cache gets hits


def snapshot(alloc, seqs: list[Sequence]) -> tuple:
    return (
        {s.seq_id: list(alloc.block_table(s)) for s in seqs},
        alloc.num_free_blocks(), alloc.num_free_cpu_blocks(), alloc.memory_report(), alloc.stats(),
    )


class AllocatorMachine(RuleBasedStateMachine):
    name = "paged"
    pair: tuple[dict, dict] = ({}, {})  # options of the two lockstep allocators

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.swapped: list[Sequence] = []
        self.n_req = 0
        self.content: dict[int, tuple[int, ...]] = {}  # block -> tokens whose KV it holds (full blocks)

    def written(self, seq: Sequence, new_blocks: list[int]) -> None:
        """Shadow of the KV: new blocks hold nothing yet; the sequence's full computed blocks hold
        its tokens (the executor writes them in the step that allocated them)."""
        for b in new_blocks:
            self.content.pop(b, None)
        table = self.allocs[0].block_table(seq)
        for j in range(seq.num_computed_tokens // BLOCK_SIZE):
            self.content[table[j]] = tuple(seq.token_ids[j * BLOCK_SIZE:(j + 1) * BLOCK_SIZE])

    @initialize(reservation=st.sampled_from(["max", "pow2", "oracle"]),
                placement=st.sampled_from(["buddy", "first_fit"]))
    def build(self, reservation: str, placement: str) -> None:
        opts = {"reservation": reservation, "placement": placement} if self.name == "contiguous" else {}
        self.allocs = [ALLOCATORS.build(self.name, NUM_BLOCKS, BLOCK_SIZE, MAX_LEN,
                                        num_cpu_blocks=CPU_BLOCKS, **opts, **extra) for extra in self.pair]

    def call(self, method: str, *args):
        """Run on both allocators, check they agree, return the first one's answer."""
        out = []
        for a in self.allocs:
            try:
                out.append(("ok", getattr(a, method)(*args)))
            except MemoryError:
                out.append(("memory", None))
        assert out[0] == out[1], f"nondeterministic {method}: {out}"
        if out[0][0] == "memory":
            raise MemoryError
        return out[0][1]

    def tracked(self) -> list[Sequence]:
        return self.running + self.swapped + self.waiting

    @rule(prefix_len=st.integers(0, 24), tail=st.lists(st.integers(0, 9), max_size=10),
          n=st.integers(1, 3), out_len=st.integers(1, 12), beam=st.booleans())
    def add_request(self, prefix_len: int, tail: list[int], n: int, out_len: int, beam: bool) -> None:
        prompt = BASE[:prefix_len] + tail
        if not prompt:
            prompt = [1]
        self.n_req += 1
        group = {"beam_width": n} if beam else {"n": n}
        params = SamplingParams(max_tokens=out_len, **group)
        req = Request(f"r{self.n_req}", prompt, params)
        self.waiting.append(req.seqs[0])

    @precondition(lambda self: self.waiting)
    @rule(i=st.integers(0, 100), chunk=st.integers(1, 40))
    def admit_chunk(self, i: int, chunk: int) -> None:
        seq = self.waiting[i % len(self.waiting)]
        computed = None
        if seq.num_computed_tokens == 0 and not self.allocs[0].block_table(seq):
            computed = self.call("get_computed_blocks", seq)
            assert computed[1] < seq.num_tokens  # never the whole prompt
            if self.name == "prefix":
                self.check_hit(seq, computed[0])
        skip = computed[1] if computed else 0
        n = min(chunk, seq.num_tokens - seq.num_computed_tokens - skip)
        before = snapshot(self.allocs[0], self.tracked())
        got = self.call("allocate_slots", seq, n, computed)
        if got is None:
            assert snapshot(self.allocs[0], self.tracked()) == before
            return
        seq.num_computed_tokens += skip + n
        self.written(seq, got)
        if seq.num_computed_tokens == seq.num_tokens:
            self.waiting.remove(seq)
            self.running.append(seq)

    def check_hit(self, seq: Sequence, blocks: list[int]) -> None:
        """Every hit block holds exactly the tokens the prompt has at its position."""
        for j, b in enumerate(blocks):
            want = tuple(seq.token_ids[j * BLOCK_SIZE:(j + 1) * BLOCK_SIZE])
            assert self.content.get(b) == want, f"block {b} at {j}: wrong KV for the prompt"
        for a in self.allocs:
            if a.index.name == "radix":
                assert len(blocks) * BLOCK_SIZE <= a.index.match_tokens(seq) < seq.num_tokens

    @precondition(lambda self: self.running)
    @rule(i=st.integers(0, 100), tok=st.integers(0, 9))
    def decode(self, i: int, tok: int) -> None:
        seq = self.running[i % len(self.running)]
        if seq.num_tokens >= MAX_LEN:
            return
        seq.token_ids.append(tok)  # the token sampled last step; its KV is written now
        before = snapshot(self.allocs[0], self.tracked())
        got = self.call("allocate_slots", seq, 1)
        if got is None:
            assert snapshot(self.allocs[0], self.tracked()) == before
            seq.token_ids.pop()
            return
        table = self.allocs[0].block_table(seq)
        for src, dst in got.copies:  # copy-on-write: the copy replaced the shared block
            assert src != dst and dst in got and dst in table and src not in table
        seq.num_computed_tokens += 1
        self.written(seq, got)

    @precondition(lambda self: self.running)
    @rule(i=st.integers(0, 100))
    def fork(self, i: int) -> None:
        parent = self.running[i % len(self.running)]
        if len(parent.request.seqs) >= parent.group_size:
            return
        child = parent.fork()
        before = snapshot(self.allocs[0], self.tracked())
        try:
            copies = self.call("fork", parent, child)
        except MemoryError:
            assert self.name == "contiguous"
            assert snapshot(self.allocs[0], self.tracked()) == before
            return
        parent.request.seqs.append(child)
        self.running.append(child)
        ptable, ctable = self.allocs[0].block_table(parent), self.allocs[0].block_table(child)
        if self.name == "contiguous":  # no sharing: the parent's KV blocks are copied in order
            assert copies == list(zip(ptable, ctable))[:len(copies)]
            assert len(copies) * BLOCK_SIZE >= parent.num_computed_tokens
        else:  # sharing allocators: identical tables, nothing copied
            assert ctable == ptable and copies == []

    @precondition(lambda self: self.running or self.swapped)
    @rule(i=st.integers(0, 100))
    def finish(self, i: int) -> None:
        pool = self.running + self.swapped
        seq = pool[i % len(pool)]
        self.call("free", seq)
        (self.running if seq in self.running else self.swapped).remove(seq)
        seq.request.seqs.remove(seq)

    @precondition(lambda self: self.running)
    @rule(i=st.integers(0, 100))
    def preempt_recompute(self, i: int) -> None:
        seq = self.running[i % len(self.running)]
        self.call("free", seq)
        seq.num_computed_tokens = 0
        self.running.remove(seq)
        self.waiting.append(seq)

    @precondition(lambda self: self.running)
    @rule(i=st.integers(0, 100))
    def swap_out(self, i: int) -> None:
        req = self.running[i % len(self.running)].request
        group = [s for s in self.running if s.request is req]
        before = snapshot(self.allocs[0], self.tracked())
        if self.call("swap_out", group) is None:
            assert snapshot(self.allocs[0], self.tracked()) == before
            return
        for s in group:
            assert self.allocs[0].block_table(s) == []
            self.running.remove(s)
            self.swapped.append(s)

    @precondition(lambda self: self.swapped)
    @rule(i=st.integers(0, 100))
    def swap_in(self, i: int) -> None:
        req = self.swapped[i % len(self.swapped)].request
        group = [s for s in self.swapped if s.request is req]
        before = snapshot(self.allocs[0], self.tracked())
        pairs = self.call("swap_in", group)
        if pairs is None:
            assert snapshot(self.allocs[0], self.tracked()) == before
            return
        for s in group:
            self.swapped.remove(s)
            self.running.append(s)
            self.written(s, [g for _, g in pairs])

    @invariant()
    def consistent(self) -> None:
        if not hasattr(self, "allocs"):
            return
        a = self.allocs[0]
        a.check_invariants()
        rep = a.memory_report()
        assert rep.total_slots == NUM_BLOCKS * BLOCK_SIZE
        assert rep.token_states + rep.reservation + rep.internal_frag + rep.external_frag == rep.total_slots
        assert a.num_free_blocks() * BLOCK_SIZE == rep.free_slots
        for s in self.running:
            table = a.block_table(s)
            assert len(table) * BLOCK_SIZE >= s.num_computed_tokens
            if self.name == "contiguous":
                assert table == list(range(table[0], table[0] + len(table)))

    def teardown(self) -> None:
        if not hasattr(self, "allocs"):
            return
        for s in self.tracked():
            self.call("free", s)
        for a in self.allocs:
            a.check_invariants()
            assert a.num_free_blocks() == NUM_BLOCKS
            assert a.num_free_cpu_blocks() == CPU_BLOCKS


def _cases() -> list:
    """Every allocator built twice identically; for ``prefix``, every eviction policy with the hash
    index (builtin hashing) beside the radix index, plus builtin beside sha256 hashing."""
    cases = [pytest.param(n, ({}, {}), 60, id=n) for n in ALLOCATORS.names() if n != "prefix"]
    for policy in EVICTION.names():
        pair = ({"index": "hash", "eviction": policy}, {"index": "radix", "eviction": policy})
        cases.append(pytest.param("prefix", pair, 40, id=f"prefix-hash-vs-radix-{policy}"))
    pair = ({"hash_fn": "builtin"}, {"hash_fn": "sha256"})
    cases.append(pytest.param("prefix", pair, 30, id="prefix-builtin-vs-sha256"))
    return cases


@pytest.mark.parametrize(("name", "pair", "examples"), _cases())
def test_allocator_state_machine(name: str, pair: tuple[dict, dict], examples: int) -> None:
    machine = type(f"{name.title()}Machine", (AllocatorMachine,), {"name": name, "pair": pair})
    cfg = settings(max_examples=examples, stateful_step_count=50, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])
    machine.TestCase.settings = cfg
    machine.TestCase().runTest()
