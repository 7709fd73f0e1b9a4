"""The paged/prefix memory report in the vLLM paper's Fig. 2 categories (vllm-paper.md §4).

Per sequence ``i`` holding ``n_i`` blocks of ``B`` slots (shared blocks counted once):

- token states: slots holding KV. We count ``L_i = min(seq.num_tokens, B * n_i)``: prompt plus
  generated tokens, i.e. the paper's ``P_i + G_i(t)``. Right after a step commits, the newest
  sampled token has no KV yet but its slot is already in the table (the paper's Fig. 3 counts
  "1 slot for the token generated this iteration" the same way); during a chunked prefill the
  cap ``B * n_i`` keeps not-yet-allocated prompt tokens out.
- reservation: ``min(B * n_i, P_i + O_i) - L_i``, slots the sequence will still fill
  (``O_i = request.expected_output_len``, the final length capped at ``max_model_len``);
- internal fragmentation: ``B * n_i - min(B * n_i, P_i + O_i)``, the part of the last block it
  will never fill;
- external & others: ``S - B * used_blocks``: free blocks, including evictable cached ones.

Only a sequence's last block can be partially filled, so physical token states are
``B * used_blocks`` minus the slack of each *distinct* last block; a last block shared by forked
siblings is counted once. That keeps the report O(#sequences) instead of O(#blocks).
"""

from __future__ import annotations

from collections.abc import Mapping

from kvlab.allocator.base import MemoryReport
from kvlab.request import Sequence


def paged_memory_report(tables: Mapping[int, list[int]], seqs: Mapping[int, Sequence], *,
                        block_size: int, num_blocks: int, max_model_len: int, num_free_blocks: int,
                        logical_blocks: int, cached_free_blocks: int = 0) -> MemoryReport:
    """Build the report for a paged-family allocator from its block tables (seq id -> block
    ids) and sequences (seq id -> sequence). Reads only its arguments and mutates none of them."""
    bs = block_size
    max_len = max_model_len
    total = num_blocks * bs
    free_blocks = num_free_blocks
    used_blocks = num_blocks - free_blocks
    seen_last: set[int] = set()
    reservation = 0
    internal = 0
    for sid, table in tables.items():
        if not table:
            continue
        last = table[-1]
        if last in seen_last:
            continue
        seen_last.add(last)
        seq = seqs[sid]
        cap = len(table) * bs
        filled = min(seq.num_tokens, cap)
        final = min(seq.num_prompt_tokens + seq.request.expected_output_len, max_len, cap)
        will_fill = max(0, final - filled)
        reservation += will_fill
        internal += cap - filled - will_fill
    token_states = used_blocks * bs - reservation - internal
    logical = logical_blocks
    return MemoryReport(
        total_slots=total,
        token_states=token_states,
        reservation=reservation,
        internal_frag=internal,
        external_frag=total - used_blocks * bs,
        free_slots=free_blocks * bs,
        logical_blocks=logical,
        physical_blocks=used_blocks,
        shared_saved_slots=(logical - used_blocks) * bs,
        cached_free_slots=cached_free_blocks * bs,
    )
