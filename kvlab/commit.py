"""Deciding what a step's samples do to a request: tokens, stop rules, forks, beam pruning.

Lives apart from the engine loop because this is where sampling semantics sit: when a sequence
stops (EOS, stop ids, stop strings, max_tokens, the model's max length), how parallel samples
fork off the prompt's KV, and how beam search keeps the best ``beam_width`` hypotheses — forking
beams that win twice and freeing beams that lose, so blocks are shared and released as in real
beam search.

The committer is pure with respect to the layers around it: it changes only the request and its
sequences (tokens, scores, status, new child sequences) and *returns* the KV operations that
follow — ``(parent, child)``: give ``child`` the parent's KV (an allocator fork); ``(seq, None)``:
release ``seq``'s KV — in the order they must be applied. The scheduler applies them
(:meth:`kvlab.scheduler.base.SchedulerBase.update_from_output`); the committer never calls the
scheduler or the allocator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kvlab.request import Request, Sequence, SequenceStatus

if TYPE_CHECKING:  # a data type only: the committer never calls the executor
    from kvlab.executor.base import Sample

Decode = Callable[[list[int]], str]
KVOp = tuple[Sequence, "Sequence | None"]  # (parent, child): fork; (seq, None): free


class Committer:
    """Applies samples to requests and reports the KV operations that follow.

    Args:
        eos_token_id: the model's end-of-sequence token (``None``: none).
        max_model_len: a sequence stops with finish reason "length" at this many tokens.
        decode: token ids -> text, for stop strings (``None``: stop strings are not checked).
    """

    def __init__(self, eos_token_id: int | None, max_model_len: int, decode: Decode | None = None) -> None:
        self.eos_token_id = eos_token_id
        self.max_model_len = max_model_len
        self.decode = decode

    # -- stop rules --
    def _append(self, seq: Sequence, s: Sample, now: float) -> None:
        seq.token_ids.append(s.token_id)
        seq.cumulative_logprob += s.logprob
        seq.token_times.append(now)
        if seq.request.sampling_params.logprobs is not None:
            seq.logprobs.append(s.logprob)
            top = {s.token_id: s.logprob}
            top.update(s.top_logprobs or {})
            seq.top_logprobs.append(top)

    def stop_status(self, seq: Sequence) -> SequenceStatus | None:
        sp = seq.request.sampling_params
        out_len = seq.num_output_tokens
        tok = seq.token_ids[-1]
        if out_len >= sp.min_tokens:
            if not sp.ignore_eos and tok == self.eos_token_id:
                seq.stop_reason = None
                return SequenceStatus.FINISHED_STOPPED
            if tok in sp.stop_token_ids:
                seq.stop_reason = tok
                return SequenceStatus.FINISHED_STOPPED
            if sp.stop and self.decode is not None:
                # Only the tail can contain a stop string that was not there a token ago.
                tail_tokens = max(len(s) for s in sp.stop) + 8
                tail = self.decode(seq.output_token_ids[-tail_tokens:])
                for s in sp.stop:
                    if s in tail:
                        seq.stop_reason = s
                        return SequenceStatus.FINISHED_STOPPED
        if out_len >= sp.max_tokens or seq.num_tokens >= self.max_model_len:
            return SequenceStatus.FINISHED_LENGTH
        return None

    def _stop(self, seq: Sequence, ops: list[KVOp]) -> None:
        status = self.stop_status(seq)
        if status is not None:
            seq.status = status
            ops.append((seq, None))

    # -- per request --
    def commit(self, req: Request, samples: dict[int, list[Sample]], now: float, ops: list[KVOp]) -> bool:
        """Apply this step's samples to ``req``; append the KV operations that follow to ``ops``.

        Mutates ``req`` and its sequences only. Returns True if the request got new tokens.
        """
        if req.sampling_params.use_beam_search:
            return self._commit_beams(req, samples, now, ops)
        seqs = req.seqs
        if len(seqs) == 1:  # the common case, kept cheap: it runs for every request every step
            seq = seqs[0]
            drawn = samples.get(seq.seq_id)
            if not drawn or seq.status.finished:
                return False
            if len(drawn) == 1:
                self._append(seq, drawn[0], now)
                self._stop(seq, ops)
                return True
        got = False
        for seq in req.live_seqs():
            drawn = samples.get(seq.seq_id)
            if not drawn:
                continue
            got = True
            if len(drawn) == 1:  # the common case: one token for one sequence
                self._append(seq, drawn[0], now)
                self._stop(seq, ops)
                continue
            targets = [seq]
            for _ in drawn[1:]:  # fork before appending: children share the KV up to here
                child = seq.fork()
                req.seqs.append(child)
                ops.append((seq, child))
                targets.append(child)
            for target, s in zip(targets, drawn):
                self._append(target, s, now)
                self._stop(target, ops)
        return got

    def _commit_beams(self, req: Request, samples: dict[int, list[Sample]], now: float,
                      ops: list[KVOp]) -> bool:
        sp = req.sampling_params
        live = req.live_seqs()
        if not any(samples.get(s.seq_id) for s in live):
            return False
        cands = sorted(
            ((seq.cumulative_logprob + s.logprob, i, seq, s)
             for seq in live for i, s in enumerate(samples.get(seq.seq_id, []))),
            key=lambda c: (-c[0], c[1], c[2].seq_id),
        )
        chosen: dict[int, list[Sample]] = {}
        parents: dict[int, Sequence] = {}
        picked = 0
        for _, _, parent, s in cands:
            ends = (not sp.ignore_eos and s.token_id == self.eos_token_id
                    and parent.num_output_tokens + 1 >= sp.min_tokens)
            if ends:
                if len(req.finished_seqs) < sp.beam_width:
                    hyp = parent.fork()  # a finished hypothesis holds no KV: no allocator fork
                    self._append(hyp, s, now)
                    hyp.status = SequenceStatus.FINISHED_STOPPED
                    req.finished_seqs.append(hyp)
                continue
            chosen.setdefault(parent.seq_id, []).append(s)
            parents[parent.seq_id] = parent
            picked += 1
            if picked == sp.beam_width:
                break
        for seq in live:  # losers first, so their blocks are free for the winners' forks
            if seq.seq_id not in chosen:
                seq.status = SequenceStatus.FINISHED_PRUNED
                ops.append((seq, None))
                req.seqs.remove(seq)
        targets: list[tuple[Sequence, Sample]] = []
        for sid, drawn in chosen.items():
            parent = parents[sid]
            kids = []
            for _ in drawn[1:]:
                child = parent.fork()
                req.seqs.append(child)
                ops.append((parent, child))
                kids.append(child)
            targets.extend(zip([parent, *kids], drawn))
        for seq, s in targets:
            self._append(seq, s, now)
        done = len(req.finished_seqs) >= sp.beam_width
        for seq, _ in targets:
            status = self.stop_status(seq)
            if status is not None or done:
                seq.status = status or SequenceStatus.FINISHED_PRUNED
                ops.append((seq, None))
                if status is not None:
                    req.finished_seqs.append(seq)
        return True


def beam_score(seq: Sequence) -> float:
    """Length-normalised cumulative logprob (HF's ``length_penalty`` convention)."""
    n = max(seq.num_output_tokens, 1)
    return seq.cumulative_logprob / (n ** seq.request.sampling_params.length_penalty)


def reported_seqs(req: Request) -> list[Sequence]:
    """The sequences a caller sees: samples in order, or beams best first (``beam_width`` of them)."""
    if not req.sampling_params.use_beam_search:
        return req.seqs
    pool = req.finished_seqs + [s for s in req.seqs if s.status != SequenceStatus.FINISHED_PRUNED
                                and s not in req.finished_seqs]
    return sorted(pool, key=beam_score, reverse=True)[: req.sampling_params.beam_width]
