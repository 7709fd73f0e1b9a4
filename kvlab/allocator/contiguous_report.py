"""The contiguous (Orca-style) memory report in the vLLM paper's Fig. 2 categories (§4).

For each sequence ``i`` with prompt ``P_i``, expected output ``O_i`` (``request.expected_output_len``),
usable reservation ``A_i`` slots and a granted run of ``C_i`` blocks of ``B`` slots:

- token states ``L_i = min(seq.num_tokens, A_i)``: prompt + generated tokens (``P_i + G_i(t)``;
  the newest sampled token counts, as the paper's Fig. 3 "slot for the token generated this
  iteration");
- reservation ``max(0, min(P_i + O_i, A_i) - L_i)``: slots it will still write;
- internal fragmentation ``A_i - max(min(P_i + O_i, A_i), L_i)``: reserved, never written
  (over-reservation: 0 for the oracle policy);
- external & others: the rest of the pool — free blocks, ``C_i * B - A_i`` (block and buddy
  rounding), all of it known before serving.

Runs held for a request's future forks count like a sequence with ``L = 0``: the sibling will
fill ``min(P + O, A)`` of them (reservation), the remainder is internal fragmentation.
"""

from __future__ import annotations

from collections.abc import Mapping

from kvlab.allocator.base import MemoryReport
from kvlab.request import Sequence

Run = tuple[int, int, int]  # (first block, granted blocks, usable token slots A)


def contiguous_memory_report(runs: Mapping[int, Run], seqs: Mapping[int, Sequence],
                             held: Mapping[str, list[Run]], final_len: Mapping[str, int], *,
                             block_size: int, num_blocks: int, num_free_blocks: int) -> MemoryReport:
    """Build the report from the allocator's runs (seq id -> run), sequences, held runs (request
    id -> runs kept for forks) and final lengths (request id -> P + O); O(#sequences + #held
    runs). Reads only its arguments and mutates none of them."""
    bs = block_size
    total = num_blocks * bs
    token_states = reservation = internal = 0
    blocks = 0
    for sid, (_, granted, slots) in runs.items():
        seq = seqs[sid]
        filled = min(seq.num_tokens, slots)
        final = min(seq.num_prompt_tokens + seq.request.expected_output_len, slots)
        token_states += filled
        reservation += max(0, final - filled)
        internal += slots - max(final, filled)
        blocks += granted
    for rid, held_runs in held.items():
        for _, granted, slots in held_runs:
            final = min(final_len.get(rid, slots), slots)
            reservation += final
            internal += slots - final
            blocks += granted
    free_blocks = num_free_blocks
    return MemoryReport(
        total_slots=total,
        token_states=token_states,
        reservation=reservation,
        internal_frag=internal,
        external_frag=total - token_states - reservation - internal,
        free_slots=free_blocks * bs,
        logical_blocks=blocks,
        physical_blocks=blocks,
        shared_saved_slots=0,
        cached_free_slots=0,
    )
