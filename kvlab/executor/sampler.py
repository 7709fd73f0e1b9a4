"""Sampling from logits rows: greedy, temperature, top-k, top-p, beam candidates, logprobs.

Logprobs are always of the RAW model distribution (``log_softmax`` of the logits before
temperature / top-k / top-p), like vLLM's default. Randomness is reproducible: a request with
``seed`` draws from a ``torch.Generator`` seeded by ``(seed, sample_index, rank)`` where
``rank`` is the draw's position among that request's draws in this step (the j-th of ``n``
parallel samples at prompt end, or the seq's rank by seq id among the request's sequences) —
so the same seed gives the same text whatever else is in the batch. Unseeded requests draw from
the executor's generator (seeded once at construction).

``min_tokens``: while ``sample_index < min_tokens`` the EOS and ``stop_token_ids`` are masked
out before sampling (the engine could not undo a sampled EOS afterwards).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kvlab.executor.base import Sample, ScheduledSeq


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask (to -inf) the tokens outside each row's top-k and nucleus top-p. Returns a new tensor.

    ``top_k`` [rows] long (<= 0 disables), ``top_p`` [rows] float (1 disables). Ties at the k-th
    value are kept; top-p keeps the smallest prefix of the sorted distribution whose mass
    reaches p (always at least the most likely token).
    """
    vocab = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    k = torch.where(top_k <= 0, torch.full_like(top_k, vocab), top_k.clamp(max=vocab))
    kth = sorted_logits.gather(-1, (k - 1).unsqueeze(-1))
    masked = logits.masked_fill(logits < kth, float("-inf"))
    sorted_masked = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
    probs = sorted_masked.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of strictly more likely tokens
    drop_sorted = mass_before >= top_p.unsqueeze(-1)
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return masked.masked_fill(drop, float("-inf"))


def _seeded(seed: int, sample_index: int, rank: int) -> torch.Generator:
    # A fixed mixing of the three numbers into 63 bits (Python's hash of ints is stable).
    key = (seed * 1_000_003 + sample_index) * 1_000_033 + rank
    return torch.Generator().manual_seed(key & 0x7FFF_FFFF_FFFF_FFFF)


def _draw_ranks(seqs: Sequence[ScheduledSeq]) -> list[int]:
    """For each seq, how many draws its request makes before it in this step (by seq id), so the
    seeded streams do not depend on the batch order."""
    by_request: dict[str, list[int]] = {}
    for i, s in enumerate(seqs):
        by_request.setdefault(s.request_id, []).append(i)
    ranks = [0] * len(seqs)
    for members in by_request.values():
        total = 0
        for i in sorted(members, key=lambda i: seqs[i].seq_id):
            ranks[i] = total
            total += seqs[i].num_samples
    return ranks


class Sampler:
    """Turns logits rows into :class:`Sample` lists; ``generator`` serves unseeded requests."""

    def __init__(self, eos_token_id: int | None, seed: int = 0) -> None:
        self.eos_token_id = eos_token_id
        self.generator = torch.Generator().manual_seed(seed)

    def _banned(self, seq: ScheduledSeq) -> list[int]:
        sp = seq.sampling
        if seq.sample_index >= sp.min_tokens:
            return []
        eos = [] if self.eos_token_id is None else [self.eos_token_id]
        return eos + list(sp.stop_token_ids)

    def sample(self, logits: torch.Tensor, seqs: Sequence[ScheduledSeq]) -> list[list[Sample]]:
        """Samples for each seq (row i of ``logits`` [rows, vocab] fp32 belongs to ``seqs[i]``).

        Returns ``seq.num_samples`` samples per seq: independent draws, the argmax (greedy,
        repeated if num_samples > 1), or for beam seqs the best tokens in descending logprob.
        Does not mutate ``logits``.
        """
        logits = logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        masked: torch.Tensor | None = None
        for i, seq in enumerate(seqs):
            banned = self._banned(seq)
            if banned:
                masked = logits.clone() if masked is None else masked
                masked[i, banned] = float("-inf")
        logits = logits if masked is None else masked
        want_top = [s.sampling.logprobs or 0 for s in seqs]
        top_vals = top_ids = None
        if max(want_top, default=0) > 0:
            top_vals, top_ids = logprobs.topk(max(want_top), dim=-1)
            top_vals, top_ids = top_vals.tolist(), top_ids.tolist()
        random_rows = [i for i, s in enumerate(seqs) if not s.beam and s.sampling.temperature > 0]
        probs = None
        if random_rows:
            rows = torch.tensor(random_rows)
            sub = logits.index_select(0, rows)
            temps = torch.tensor([seqs[i].sampling.temperature for i in random_rows]).unsqueeze(-1)
            sub = sub / temps
            top_k = torch.tensor([seqs[i].sampling.top_k for i in random_rows])
            top_p = torch.tensor([seqs[i].sampling.top_p for i in random_rows])
            if bool((top_k > 0).any()) or bool((top_p < 1).any()):
                sub = apply_top_k_top_p(sub, top_k, top_p)
            probs = dict(zip(random_rows, sub.softmax(dim=-1)))
        greedy = logits.argmax(dim=-1).tolist()
        ranks = _draw_ranks(seqs)
        out: list[list[Sample]] = []
        for i, seq in enumerate(seqs):
            n = seq.num_samples
            if seq.beam:
                tokens = logits[i].topk(n).indices.tolist()  # sorted: descending logprob
            elif probs is not None and i in probs:
                tokens = []
                for j in range(n):
                    seed = seq.sampling.seed
                    gen = self.generator if seed is None else _seeded(seed, seq.sample_index, ranks[i] + j)
                    tokens.append(int(torch.multinomial(probs[i], 1, generator=gen)))
            else:
                tokens = [greedy[i]] * n
            row_lp = logprobs[i, tokens].tolist()
            k = want_top[i]
            top = None
            if k and top_vals is not None and top_ids is not None:
                top = dict(zip(top_ids[i][:k], top_vals[i][:k]))
            out.append([Sample(t, lp, dict(top) if top is not None else None)
                        for t, lp in zip(tokens, row_lp)])
        return out
