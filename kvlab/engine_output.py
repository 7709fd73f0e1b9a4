"""What callers see of a request: its :class:`RequestOutput` so far, and its record once finished.

:func:`finished_record` flattens a finished request into the :class:`RequestRecord` that metrics
read. :class:`OutputBuilder` turns a request into the output a caller streams: token ids, text cut
at a matched stop string, log-probabilities, finish reasons. The engine owns requests; the builder
owns only the text state of their sequences (one :class:`~kvlab.detokenize.IncrementalDetokenizer`
per sequence id). Each call decodes only the tokens added since the last one; beams, whose
sequences are rewritten between steps, are decoded whole. A request's text state is dropped when
its final output is built, or by :meth:`OutputBuilder.forget` when it ends without one (an abort).
"""

from __future__ import annotations

from typing import Any

from kvlab.commit import reported_seqs
from kvlab.detokenize import Decode, IncrementalDetokenizer
from kvlab.records import RequestRecord
from kvlab.request import Request
from kvlab.request_output import CompletionOutput, RequestOutput


class OutputBuilder:
    """Builds request outputs; ``decode`` is None for an executor without a tokenizer (ids only)."""

    def __init__(self, decode: Decode | None) -> None:
        self.decode = decode
        self._detok: dict[int, IncrementalDetokenizer] = {}  # seq_id -> its text so far

    def build(self, req: Request, record: RequestRecord | None) -> RequestOutput:
        """``req``'s output now; ``record`` is its finished record, if it has one."""
        outs = []
        finished = req.finish_time is not None
        for i, seq in enumerate(reported_seqs(req)):
            ids = seq.output_token_ids
            text = ""
            if self.decode is not None:
                text = self._text(req, seq, ids, finished or seq.is_finished)
                if isinstance(seq.stop_reason, str) and seq.stop_reason in text:
                    text = text[: text.index(seq.stop_reason)]
            lps = seq.top_logprobs if req.sampling_params.logprobs is not None else None
            outs.append(CompletionOutput(i, text, list(ids), seq.cumulative_logprob, lps,
                                         seq.status.finish_reason if seq.is_finished else None,
                                         seq.stop_reason))
        if finished:
            self.forget(req)
        return RequestOutput(req.request_id, req.prompt, req.prompt_token_ids, outs, finished,
                             req.num_cached_tokens, record, finish_detail=req.finish_detail)

    def forget(self, req: Request) -> None:
        """Drop the text state of ``req``'s sequences (it gets no further output)."""
        for seq in req.seqs:
            self._detok.pop(seq.seq_id, None)

    def _text(self, req: Request, seq: Any, ids: list[int], final: bool) -> str:
        assert self.decode is not None
        if req.sampling_params.use_beam_search:
            return self.decode(ids)
        d = self._detok.get(seq.seq_id)
        if d is None or not d.matches(ids):
            d = self._detok[seq.seq_id] = IncrementalDetokenizer(self.decode)
        d.update(ids, final)
        return d.text

    def __len__(self) -> int:
        """Sequences with text state (a leak check for tests)."""
        return len(self._detok)


def finished_record(req: Request) -> RequestRecord:
    """The record of a request that has just finished (``finish_time`` set). Its lengths are the
    reported sequences' (the best beams, or all ``n`` samples); ``output_len`` and the token times
    are the first one's."""
    best = reported_seqs(req)
    seq = best[0] if best else req.seqs[0]
    return RequestRecord(
        request_id=req.request_id, arrival_time=req.arrival_time,
        first_scheduled_time=req.first_scheduled_time, first_token_time=req.first_token_time,
        finish_time=req.finish_time, prompt_len=req.num_prompt_tokens,
        output_len=seq.num_output_tokens,
        total_output_tokens=sum(s.num_output_tokens for s in best) if best else 0,
        num_seqs=req.sampling_params.num_seqs, num_preemptions=req.num_preemptions,
        num_cached_tokens=req.num_cached_tokens, finish_reason=seq.status.finish_reason,
        token_times=list(seq.token_times))
