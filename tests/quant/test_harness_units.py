"""The comparison harness's pure parts: scheme discovery, prompts, agreement, Pareto front, report."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from kvlab.quant import report
from kvlab.quant.accuracy import LogitsTap, TextScore, greedy_match
from kvlab.quant.schemes import available_schemes, scheme_overrides, select_schemes
from kvlab.quant.text import eval_contexts, passkey_cases


class CharTok:
    """A character-level stand-in tokenizer (ids = code points, BOS = 1)."""

    bos_token_id = 1

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([1] if add_special_tokens else []) + [ord(c) for c in text]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if i > 1)


def test_schemes_are_discovered_from_the_config_group(tmp_path: Path) -> None:
    assert available_schemes(tmp_path) == ["none"]  # no group yet: the baseline alone
    assert scheme_overrides("none", tmp_path) == []
    with pytest.raises(ValueError, match="only 'none' runs"):
        scheme_overrides("int8", tmp_path)
    (tmp_path / "kv_quant").mkdir()
    for name in ("int4", "zz_new", "none", "int8"):
        (tmp_path / "kv_quant" / f"{name}.yaml").write_text(f"name: {name}\n")
    (tmp_path / "config.yaml").write_text("defaults:\n  - kv_quant: none\n")
    assert available_schemes(tmp_path) == ["none", "int8", "int4", "zz_new"]
    assert scheme_overrides("zz_new", tmp_path) == ["kv_quant=zz_new"]
    assert select_schemes(["int4"], tmp_path) == ["none", "int4"]  # the baseline always runs first
    with pytest.raises(ValueError, match="unknown scheme 'fp3'.*choose from: none, int8, int4, zz_new"):
        select_schemes(["fp3"], tmp_path)
    (tmp_path / "config.yaml").write_text("defaults:\n  - allocator: paged\n")
    assert scheme_overrides("int8", tmp_path) == ["+kv_quant=int8"]


def test_repo_schemes_include_the_baseline() -> None:
    assert available_schemes()[0] == "none"


def test_eval_contexts_and_passkey_prompts() -> None:
    tok = CharTok()
    ctx, files = eval_contexts(tok, 300, 3)
    assert files and all(len(c) == 300 and c[0] == 1 for c in ctx)
    assert ctx[0][1:] != ctx[1][1:]  # consecutive windows, not the same one
    with pytest.raises(ValueError, match="contexts of"):
        eval_contexts(tok, 10**7, 1)
    cases = passkey_cases(tok, [400, 800], [0.1, 0.9])
    assert [(c.length, c.depth) for c in cases] == [(400, 0.1), (400, 0.9), (800, 0.1), (800, 0.9)]
    for c in cases:
        text = tok.decode(c.token_ids)
        assert abs(len(c.token_ids) - c.length) <= 1 and text.endswith("The pass key is")
        assert text.count(c.key) == 2
        where = text.index(c.key) / len(text)
        assert abs(where - c.depth) < 0.25
    with pytest.raises(ValueError, match="too short"):
        passkey_cases(tok, [50], [0.5])


def test_greedy_match_counts_tokens_before_the_first_divergence() -> None:
    assert greedy_match([[1, 2, 3, 4], [5, 6], [7]], [[1, 2, 9, 4], [5, 6], [8]]) == [2, 2, 0]


def test_logits_tap_sees_every_row_and_restores_the_model() -> None:
    import torch

    class Model:
        def forward(self, ids, pos, cache, meta, logit_rows=None):  # noqa: ANN001, ANN201
            out = torch.arange(len(ids) * 2, dtype=torch.float32).view(len(ids), 2)
            return out if logit_rows is None else out.index_select(0, logit_rows)

    m, seen = Model(), []
    with LogitsTap(m, seen.append):
        rows = m.forward(torch.zeros(3), None, None, None, torch.tensor([2]))
    assert rows.tolist() == [[4.0, 5.0]] and seen[0].shape == (3, 2)
    assert "forward" not in vars(m)
    assert math.isnan(TextScore().ppl)


def test_pareto_front_and_relative_columns() -> None:
    assert report.pareto_front([4, 2, 1, 3], [0.0, 0.5, 3.0, 1.0]) == [2, 1, 0]
    df = report.add_relative_columns(pd.DataFrame([
        {"scheme": "none", "ppl": 10.0, "capacity_tokens": 100.0, "output_throughput": 5.0},
        {"scheme": "int8", "ppl": 10.1, "capacity_tokens": 370.0, "output_throughput": 6.0}]))
    assert df["ppl_delta_pct"].tolist() == pytest.approx([0.0, 1.0])
    assert df["capacity_ratio"].tolist() == pytest.approx([1.0, 3.7])
    with pytest.raises(ValueError, match="baseline"):
        report.add_relative_columns(pd.DataFrame([{"scheme": "int8", "ppl": 1.0}]))


def test_markdown_reports_targets_and_update_doc(tmp_path: Path) -> None:
    df = report.add_relative_columns(pd.DataFrame([
        {"scheme": "none", "ppl": 10.0, "sim_capacity_tokens": 100.0},
        {"scheme": "int8", "ppl": 10.1, "sim_capacity_tokens": 190.0},
        {"scheme": "int4", "ppl": 10.2, "sim_capacity_tokens": 350.0}]))
    md = report.markdown(df, {"mode": "quick"})
    assert "| int8: perplexity +0.5% or less | +1.000% | no |" in md
    assert "| int4: perplexity +3.0% or less | +2.000% | yes |" in md
    assert "| kivi2: perplexity +8.0% or less | n/a | not run |" in md
    assert "1.900x | yes |" in md
    doc = tmp_path / "q.md"
    doc.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n")
    report.update_doc(doc, md)
    text = doc.read_text()
    assert "old" not in text and md in text and text.startswith("intro") and text.endswith("outro\n")
    doc.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        report.update_doc(doc, md)


def _fake_run(d: Path, rows: list[dict]) -> Path:
    d.mkdir()
    base = {"bytes_per_token": 1.0, "capacity_tokens": 1.0, "kl_mean": 0.0, "top1_agreement": 1.0,
            "greedy_match_tokens": 4.0, "passkey_accuracy": 1.0, "output_throughput": 1.0, "max_batch": 1.0}
    pd.DataFrame([{**base, **r} for r in rows]).to_csv(d / "summary.csv", index=False)
    return d


def test_report_from_merges_runs_of_one_baseline(tmp_path: Path) -> None:
    from kvlab.quant.__main__ import main

    a = _fake_run(tmp_path / "a", [{"scheme": "none", "ppl": 20.0, "bytes_per_token": 4.0},
                                   {"scheme": "int8", "ppl": 20.1, "bytes_per_token": 1.1}])
    b = _fake_run(tmp_path / "b", [{"scheme": "none", "ppl": 20.0, "bytes_per_token": 4.0},
                                   {"scheme": "int8", "ppl": 99.0}, {"scheme": "fp8_e4m3", "ppl": 20.05}])
    assert main(["--report-from", str(a), str(b), "--out", str(tmp_path / "m")]) == 0
    df = pd.read_csv(tmp_path / "m" / "summary.csv")
    assert df["scheme"].tolist() == ["none", "fp8_e4m3", "int8"]  # known order; the first run wins for int8
    assert df.set_index("scheme")["ppl_delta_pct"].to_dict() == pytest.approx(
        {"none": 0.0, "fp8_e4m3": 0.25, "int8": 0.5})
    c = _fake_run(tmp_path / "c", [{"scheme": "none", "ppl": 21.0}])
    assert main(["--report-from", str(a), str(c), "--out", str(tmp_path / "n")]) == 2  # different baselines
