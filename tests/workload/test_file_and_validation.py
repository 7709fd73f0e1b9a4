"""Trace-file loading (JSON/JSONL, lengths and text forms) and config validation errors."""

from __future__ import annotations

import json

import pytest

from kvlab.workloads import build_workload

OPT = {"seed": 0, "vocab_size": 50272, "max_model_len": 2048}


class FakeTokenizer:
    """Whitespace tokenizer: one id per word (ids from 1000), enough to check lengths and plumbing."""

    def encode(self, text: str) -> list[int]:
        return [1000 + (hash(w) % 1000) for w in text.split()]


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return str(path)


def test_jsonl_lengths_need_no_tokenizer(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt_len": 10, "output_len": 5},
                                              {"prompt_len": 3000, "output_len": 5},  # filtered out
                                              {"prompt_len": 20, "output_len": 7}])
    w = build_workload({"name": "file", "path": path, "num_requests": 5, "shuffle": False}, **OPT)
    assert [(r.prompt_len, r.output_len) for r in w.requests] == [(10, 5), (20, 7)] * 2 + [(10, 5)]
    assert all(len(r.prompt_token_ids) == r.prompt_len for r in w.requests)
    assert "trace file" in w.description and "SYNTHETIC" not in w.description


def test_jsonl_text_with_tokenizer(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "a b c", "completion": "x y"},
                                              {"prompt": "one two", "output_len": 4}])
    w = build_workload({"name": "file", "path": path, "num_requests": 2, "shuffle": False},
                       tokenizer=FakeTokenizer(), **OPT)
    assert [(r.prompt_len, r.output_len) for r in w.requests] == [(3, 2), (2, 4)]
    assert w.requests[0].prompt == "a b c" and w.requests[0].messages[0]["content"] == "a b c"
    assert w.requests[0].prompt_token_ids == FakeTokenizer().encode("a b c")


def test_sharegpt_json_with_tokenizer(tmp_path):
    data = [
        {"conversations": [{"from": "human", "value": "hi there friend"}, {"from": "gpt", "value": "hello"}]},
        {"conversations": [{"from": "gpt", "value": "only a reply"}]},  # no human->gpt pair: skipped
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a b c d"}]},
    ]
    (tmp_path / "sg.json").write_text(json.dumps(data))
    cfg = {"name": "file", "path": str(tmp_path / "sg.json"), "num_requests": 2, "shuffle": False,
           "rate": 1.0}
    w = build_workload(cfg, tokenizer=FakeTokenizer(), **OPT)
    assert [(r.prompt_len, r.output_len) for r in w.requests] == [(3, 1), (1, 4)]


def test_text_without_tokenizer_is_a_clear_error(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "a b c", "output_len": 3}])
    with pytest.raises(ValueError, match="tokenizer"):
        build_workload({"name": "file", "path": path, "num_requests": 1}, **OPT)
    # ... unless the record also has lengths
    path2 = write_jsonl(tmp_path / "u.jsonl", [{"prompt": "a b c", "prompt_len": 3, "output_len": 3}])
    w = build_workload({"name": "file", "path": path2, "num_requests": 1}, **OPT)
    assert w.requests[0].prompt_len == 3


def test_missing_and_broken_files_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="workload.path"):
        build_workload({"name": "file", "path": str(tmp_path / "nope.json"), "num_requests": 1}, **OPT)
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="workload.path"):
        build_workload({"name": "file", "path": str(tmp_path / "bad.jsonl"), "num_requests": 1}, **OPT)
    with pytest.raises(ValueError, match="workload.path"):
        build_workload({"name": "file", "num_requests": 1}, **OPT)


@pytest.mark.parametrize("cfg, match", [
    ({"name": "sharegpt", "rate": -1.0, "num_requests": 5}, "workload.rate"),
    ({"name": "sharegpt", "rate": 0, "num_requests": 5}, "workload.rate"),
    ({"name": "sharegpt", "num_requests": 0}, "workload.num_requests"),
    ({"name": "sharegpt", "num_requests": -3}, "workload.num_requests"),
    ({"name": "sharegpt", "num_requests": 5, "duration_s": 10, "rate": 1.0}, "exactly one"),
    ({"name": "sharegpt"}, "exactly one"),
    ({"name": "sharegpt", "duration_s": 10}, "finite workload.rate"),
    ({"name": "sharegpt", "rate": 1.0, "duration_s": -1}, "workload.duration_s"),
    ({"name": "nosuch", "num_requests": 5}, "workload.name.*choose one of"),
    ({"name": "sharegpt", "num_requests": 5, "prompt_len": 3}, "workload.prompt_len.*allowed"),
    ({"name": "sharegpt", "num_requests": 5, "n": 2, "beam_width": 2}, "not both"),
    ({"name": "sharegpt", "num_requests": 5, "n": 0}, "workload.n"),
    ({"name": "fixed", "num_requests": 5, "prompt_len": 2000, "output_len": 100}, "max_total_len"),
    ({"name": "uniform", "num_requests": 5, "prompt_len_min": 50, "prompt_len_max": 10}, "prompt_len_min"),
    ({"name": "chat", "num_requests": 5, "new_prob": 0}, "workload.new_prob"),
    ({"name": "sharegpt", "num_requests": 5, "max_total_len": 3}, "filter"),
])
def test_validation_errors_name_the_key(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_workload(cfg, **OPT)


def test_accepts_a_hydra_dictconfig():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"name": "fixed", "rate": 1.0, "num_requests": 3, "prompt_len": 4,
                            "output_len": 2})
    w = build_workload(cfg, **OPT)
    assert len(w) == 3 and w.name == "fixed"


def test_every_shipped_yaml_builds():
    from pathlib import Path

    import yaml

    for f in sorted(Path(__file__).parents[2].joinpath("conf", "workload").glob("*.yaml")):
        cfg = yaml.safe_load(f.read_text())
        assert cfg["name"] == f.stem
        if cfg["name"] == "file":
            continue  # needs a user-provided path
        tok = _WordTokenizer() if cfg["name"] == "prompts" else None  # real text needs a tokenizer
        assert len(build_workload({**cfg, "num_requests": 20}, **OPT, tokenizer=tok)) == 20


class _WordTokenizer:
    """A stand-in tokenizer: one id per word (enough for length bookkeeping)."""

    chat_template = None

    def encode(self, text: str) -> list[int]:
        return [100 + len(w) for w in text.split()]


def test_prompts_workload_needs_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        build_workload({"name": "prompts", "num_requests": 2}, **OPT)


@pytest.mark.parametrize("key, bad", [("warmup_s", -1), ("temperature", -0.5), ("ignore_eos", "yes"),
                                      ("sampling_seed", 1.5)])
def test_driver_keys_are_accepted_and_validated(key, bad):
    ok = build_workload({"name": "fixed", "num_requests": 2, "warmup_s": 60, "temperature": 0.0,
                         "ignore_eos": False, "sampling_seed": 7}, **OPT)
    assert ok.config["warmup_s"] == 60 and ok.config["ignore_eos"] is False
    with pytest.raises(ValueError, match=f"workload.{key}"):
        build_workload({"name": "fixed", "num_requests": 2, key: bad}, **OPT)
