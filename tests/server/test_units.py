"""Server pieces without a server: streaming deltas, sweep winner (best=), bench statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kvlab.bench.stats import RequestResult, summarize
from kvlab.request_output import CompletionOutput
from kvlab.serve import _shorthand
from kvlab.server.best import best_overrides, pick_best
from kvlab.server.outputs import ChoiceCursor, next_delta


def _out(text: str, n_tokens: int, finish: str | None = None) -> CompletionOutput:
    return CompletionOutput(0, text, list(range(n_tokens)), None, None, finish)


def test_deltas_hold_back_possible_stop_prefix_and_split_chars() -> None:
    cur = ChoiceCursor()
    assert next_delta(cur, _out("Hello wo", 2), holdback=3).text == "Hello"
    assert next_delta(cur, _out("Hello world\ufffd", 3), holdback=0).text == " world"
    final = next_delta(cur, _out("Hello world!", 4, "stop"), holdback=3)
    assert final.text == "!" and final.finish_reason == "stop"
    assert next_delta(cur, _out("Hello world!", 4, "stop"), holdback=3) is None


def _job(
    root: Path, name: str, alloc: dict, sched: dict, rate: float, tput: float, executor: str = "sim"
) -> None:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    cfg = {
        "allocator": alloc,
        "scheduler": sched,
        "executor": {"name": executor},
        "model": {"name": "opt-13b"},
        "workload": {"name": "sharegpt", "rate": rate},
        "seed": 0,
    }
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "metrics.json").write_text(json.dumps({"output_throughput": tput, "mean_ttft_ms": 1000 / tput}))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    paged = {"name": "paged", "block_size": 16, "num_blocks": 900}
    cont = {"name": "contiguous", "block_size": 16, "num_blocks": 900, "reservation": "pow2"}
    fcfs = {"name": "fcfs", "max_num_seqs": 256}
    for i, (alloc, rate, tput) in enumerate(
        [(paged, 1.0, 50.0), (paged, 2.0, 90.0), (cont, 1.0, 45.0), (cont, 2.0, 60.0)]
    ):
        _job(tmp_path, str(i), alloc, fcfs, rate, tput)
    (tmp_path / "9").mkdir()  # a job that never finished: ignored
    return tmp_path


def test_pick_best_max_and_min(sweep: Path) -> None:
    best = pick_best(sweep, "output_throughput", "max")
    assert best.row["allocator.name"] == "paged" and best.value == pytest.approx(70.0)
    assert "paged" in best.summary() and "only its allocator/scheduler" in best.summary()
    worst = pick_best(sweep, "mean_ttft_ms", "min")
    assert worst.row["allocator.name"] == "paged"
    assert pick_best(sweep, "output_throughput", "min").row["allocator.name"] == "contiguous"
    with pytest.raises(ValueError, match="not in the sweep"):
        pick_best(sweep, "no_such_metric")
    with pytest.raises(ValueError, match="max or min"):
        pick_best(sweep, mode="best")


def test_best_overrides_keep_serving_model_and_cli_keys(sweep: Path) -> None:
    best = pick_best(sweep, "output_throughput", "min")  # contiguous wins "min"
    ov = best_overrides(best, ["allocator.block_size=32", "server.port=9"])
    assert "allocator=contiguous" in ov and "++allocator.reservation=pow2" in ov
    assert not any(o.startswith("model") for o in ov)  # a sim sweep: the served model stays
    assert not any("num_blocks" in o for o in ov)  # sized for a simulated GPU: dropped
    assert not any("block_size" in o for o in ov)  # the command line wins
    assert "scheduler=fcfs" in ov and "++scheduler.max_num_seqs=256" in ov
    assert best_overrides(best, ["scheduler=lpm"]).count("scheduler=fcfs") == 0


def test_best_shorthand() -> None:
    assert _shorthand(["best=results/x", "best.metric=m", "server.port=1"]) == [
        "best.dir=results/x",
        "best.metric=m",
        "server.port=1",
    ]


def test_bench_summary_uses_vllm_definitions() -> None:
    r1 = RequestResult(True, prompt_len=10, output_tokens=5, ttft=0.5, e2e=1.3, itl=[0.2, 0.2, 0.2, 0.2])
    r2 = RequestResult(True, prompt_len=20, output_tokens=1, ttft=0.4, e2e=0.4)
    bad = RequestResult(False, error="HTTP 500")
    m = summarize([r1, r2, bad], duration_s=2.0)
    assert m["completed"] == 2 and m["failed"] == 1
    assert m["output_throughput"] == pytest.approx(3.0) and m["request_throughput"] == pytest.approx(1.0)
    assert m["total_token_throughput"] == pytest.approx(18.0)
    assert m["mean_tpot_ms"] == pytest.approx(200.0)  # (1.3 - 0.5) / 4; r2 has a single token
    assert m["mean_ttft_ms"] == pytest.approx(450.0) and m["median_itl_ms"] == pytest.approx(200.0)
    assert m["mean_e2el_ms"] == pytest.approx(850.0)


def test_resolve_best_composes_the_served_config(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kvlab.serve import resolve_best

    cfg = resolve_best(
        {"best": {"dir": str(sweep), "metric": "output_throughput", "mode": "min"}},
        ["server.port=9", "allocator.block_size=32"],
    )
    assert cfg["allocator"]["name"] == "contiguous" and cfg["allocator"]["reservation"] == "pow2"
    assert cfg["allocator"]["block_size"] == 32 and cfg["allocator"]["num_blocks"] is None
    assert cfg["model"]["name"] == "smollm2-135m" and cfg["server"]["port"] == 9
    assert "contiguous" in capsys.readouterr().out


def test_api_key_sources_file_then_env_then_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kvlab.serve import resolve_api_key

    monkeypatch.delenv("KVLAB_API_KEY", raising=False)
    assert resolve_api_key({}) is None
    assert resolve_api_key({"api_key": "cli"}) == "cli"
    monkeypatch.setenv("KVLAB_API_KEY", "from-env")
    assert resolve_api_key({"api_key": "cli"}) == "from-env"
    monkeypatch.setenv("OTHER_KEY", "other")
    assert resolve_api_key({"api_key_env": "OTHER_KEY"}) == "other"
    key = tmp_path / "key"
    key.write_text("from-file\nignored\n")
    assert resolve_api_key({"api_key_file": str(key), "api_key": "cli"}) == "from-file"
    with pytest.raises(ValueError, match="server.api_key_file"):
        resolve_api_key({"api_key_file": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        resolve_api_key({"api_key_file": str(tmp_path / "empty")})


def test_capacity_error_names_the_real_cause() -> None:
    from kvlab.request import SamplingParams
    from kvlab.request_output import CompletionOutput, RequestOutput
    from kvlab.server.generate import add_error, capacity_error

    one = RequestOutput("r", None, list(range(10)), [CompletionOutput(0, "", [1] * 900, None, None, "abort")], True)
    err = capacity_error(one, 1024)
    assert err.param == "max_tokens" and err.code == "kv_capacity_exceeded" and "1024" in err.message
    assert "x" not in err.message.split("(")[0] and "n" not in err.message.split(";")[-1].split()
    many = RequestOutput("r", None, [1] * 10, [CompletionOutput(i, "", [1], None, None, "abort") for i in range(8)],
                         True)
    assert capacity_error(many, 1024).param == "n"
    assert add_error("the request can never fit the KV cache", SamplingParams(n=1)).param == "max_tokens"
    assert add_error("the request can never fit the KV cache", SamplingParams(n=4)).param == "n"
    assert add_error("request id 'x' is already in use", SamplingParams()).param == "prompt"
