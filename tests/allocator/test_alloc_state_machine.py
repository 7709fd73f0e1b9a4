"""Stateful property test: random admit / decode / fork / free / swap / preempt on every allocator.

Two allocators built identically run every operation in lockstep (determinism: same ops -> same
block ids). After every step the allocator's own ``check_invariants`` runs (conservation, ref
counts = holders, free queue = ref 0, sharing only by fork/prefix, report sums) plus the checks
below; a ``None`` / ``MemoryError`` answer must leave a snapshot of the state unchanged.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kvlab.allocator import ALLOCATORS
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

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.swapped: list[Sequence] = []
        self.n_req = 0

    @initialize(reservation=st.sampled_from(["max", "pow2", "oracle"]),
                placement=st.sampled_from(["buddy", "first_fit"]))
    def build(self, reservation: str, placement: str) -> None:
        opts = {"reservation": reservation, "placement": placement} if self.name == "contiguous" else {}
        self.allocs = [ALLOCATORS.build(self.name, NUM_BLOCKS, BLOCK_SIZE, MAX_LEN,
                                        num_cpu_blocks=CPU_BLOCKS, **opts) for _ in range(2)]

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
        skip = computed[1] if computed else 0
        n = min(chunk, seq.num_tokens - seq.num_computed_tokens - skip)
        before = snapshot(self.allocs[0], self.tracked())
        got = self.call("allocate_slots", seq, n, computed)
        if got is None:
            assert snapshot(self.allocs[0], self.tracked()) == before
            return
        seq.num_computed_tokens += skip + n
        if seq.num_computed_tokens == seq.num_tokens:
            self.waiting.remove(seq)
            self.running.append(seq)

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
        if self.call("swap_in", group) is None:
            assert snapshot(self.allocs[0], self.tracked()) == before
            return
        for s in group:
            self.swapped.remove(s)
            self.running.append(s)

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


@pytest.mark.parametrize("name", ALLOCATORS.names())
def test_allocator_state_machine(name: str) -> None:
    machine = type(f"{name.title()}Machine", (AllocatorMachine,), {"name": name})
    cfg = settings(max_examples=60, stateful_step_count=50, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])
    machine.TestCase.settings = cfg
    machine.TestCase().runTest()
