"""Committing a step's samples: append tokens, apply stop rules, fork samples, select beams.

Lives apart from the engine loop because this is where sampling semantics sit: when a sequence
stops (EOS, stop ids, stop strings, max_tokens, the model's max length), how parallel samples
fork off the prompt's KV, and how beam search keeps the best ``beam_width`` hypotheses — forking
beams that win twice and freeing beams that lose, so blocks are shared and released as in real
beam search.
"""

from __future__ import annotations

from collections.abc import Callable

from kvlab.executor.base import Sample
from kvlab.request import Request, Sequence, SequenceStatus
from kvlab.scheduler.base import SchedulerBase

Decode = Callable[[list[int]], str]


class Committer:
    def __init__(self, scheduler: SchedulerBase, eos_token_id: int | None, max_model_len: int,
                 decode: Decode | None) -> None:
        self.scheduler = scheduler
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

    def _finish_if_stopped(self, seq: Sequence) -> None:
        status = self.stop_status(seq)
        if status is not None:
            self.scheduler.free_seq(seq, status)

    # -- per request --
    def commit(self, req: Request, samples: dict[int, list[Sample]], now: float) -> bool:
        """Apply this step's samples to ``req``. Returns True if the request got new tokens."""
        if req.sampling_params.use_beam_search:
            return self._commit_beams(req, samples, now)
        got = False
        for seq in list(req.live_seqs()):
            drawn = samples.get(seq.seq_id)
            if not drawn:
                continue
            got = True
            targets = [seq] + [self.scheduler.fork_seq(seq) for _ in drawn[1:]]  # fork before append
            for target, s in zip(targets, drawn):
                self._append(target, s, now)
                self._finish_if_stopped(target)
        return got

    def _commit_beams(self, req: Request, samples: dict[int, list[Sample]], now: float) -> bool:
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
                self.scheduler.free_seq(seq, SequenceStatus.FINISHED_PRUNED)
                req.seqs.remove(seq)
        targets: list[tuple[Sequence, Sample]] = []
        for sid, drawn in chosen.items():
            parent = parents[sid]
            kids = [self.scheduler.fork_seq(parent) for _ in drawn[1:]]
            targets.extend(zip([parent, *kids], drawn))
        for seq, s in targets:
            self._append(seq, s, now)
        done = len(req.finished_seqs) >= sp.beam_width
        for seq, _ in targets:
            status = self.stop_status(seq)
            if status is not None or done:
                self.scheduler.free_seq(seq, status or SequenceStatus.FINISHED_PRUNED)
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
