"""The offline API, shaped like vLLM's: ``LLM(model=...).generate(prompts, SamplingParams(...))``.

Configuration comes from the same Hydra config as ``python -m kvlab.run``; keyword arguments
with vLLM's names (``block_size``, ``max_num_seqs``, ``enable_chunked_prefill``,
``gpu_memory_utilization``, ``swap_space`` ...) map onto kvlab's keys, and ``overrides`` takes
any other Hydra override (``["allocator.reservation=pow2"]``). ``model`` is a name from
``conf/model/`` or the path of a local Hugging Face checkpoint directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kvlab.engine import LLMEngine
from kvlab.request import SamplingParams
from kvlab.request_output import RequestOutput

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# vLLM keyword -> kvlab config key
KWARG_KEYS = {
    "block_size": "allocator.block_size",
    "num_gpu_blocks_override": "allocator.num_blocks",
    "num_blocks": "allocator.num_blocks",
    "max_num_seqs": "scheduler.max_num_seqs",
    "max_num_batched_tokens": "scheduler.max_num_batched_tokens",
    "enable_chunked_prefill": "scheduler.chunked_prefill",
    "preemption_mode": "scheduler.preemption",
    "swap_space": "kv.swap_space_gib",
    "gpu_memory_utilization": "kv.gpu_memory_utilization",
    "max_model_len": "kv.max_model_len",
    "seed": "seed",
    "dtype": "dtype",
    "device": "device",
}


def compose_config(model: str = "smollm2-135m", allocator: str = "paged", scheduler: str = "fcfs",
                   executor: str = "torch", overrides: Sequence[str] = (), **kwargs: Any) -> dict[str, Any]:
    """The resolved config dict for these choices (Hydra compose API, no working-dir change)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from kvlab.config_check import as_plain

    unknown = sorted(set(kwargs) - set(KWARG_KEYS))
    if unknown:
        raise ValueError(f"unknown LLM argument {unknown[0]!r}; choose from: {', '.join(sorted(KWARG_KEYS))} "
                         "or pass Hydra overrides=[...]")
    is_path = "/" in model or Path(model).exists()
    ov = [f"allocator={allocator}", f"scheduler={scheduler}", f"executor={executor}",
          f"model={'smollm2-135m' if is_path else model}"]
    ov += [f"{KWARG_KEYS[k]}={'null' if v is None else v}" for k, v in kwargs.items()]
    ov += list(overrides)
    from hydra.errors import HydraException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = as_plain(compose(config_name="config", overrides=ov))
    except HydraException as e:  # unknown group choice or key: Hydra's message lists the options
        raise ValueError(str(e).split("\nConfig search path")[0]) from None
    finally:
        GlobalHydra.instance().clear()
    if is_path:
        from kvlab.models.config import resolve_model

        cfg["model"] = resolve_model(model)
    return cfg


class LLM:
    """A real model behind kvlab's engine, for offline batched generation."""

    def __init__(self, model: str = "smollm2-135m", allocator: str = "paged", scheduler: str = "fcfs",
                 *, overrides: Sequence[str] = (), **kwargs: Any) -> None:
        self.cfg = compose_config(model, allocator, scheduler, "torch", overrides, **kwargs)
        self.engine = LLMEngine(self.cfg)
        self.tokenizer = self.engine.tokenizer

    def generate(self, prompts: str | list[str] | list[list[int]], sampling_params: SamplingParams | None = None,
                 *, use_tqdm: bool = False) -> list[RequestOutput]:
        """Generate for every prompt (texts or token-id lists), batched by the engine.

        Returns one ``RequestOutput`` per prompt, in order. Invalid prompts raise ``ValueError``
        before anything is queued.
        """
        params = sampling_params or SamplingParams()
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        ids = [self.tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
        for i in ids:  # validate everything first: a bad prompt must not leave others queued
            if not i:
                raise ValueError("the prompt is empty")
            if len(i) >= self.engine.max_model_len:
                raise ValueError(f"the prompt has {len(i)} tokens; the model's maximum length is "
                                 f"{self.engine.max_model_len}")
        params.validate()
        reqs = [self.engine.add_request(p if isinstance(p, str) else i, params)
                for p, i in zip(prompts, ids)]
        results: dict[str, RequestOutput] = {}
        from tqdm import tqdm

        with tqdm(total=len(reqs), disable=not use_tqdm, desc="generate") as bar:
            while self.engine.has_unfinished_requests():
                for out in self.engine.step():
                    if out.finished:
                        results[out.request_id] = out
                        bar.update(1)
        return [results[r.request_id] for r in reqs]

    def chat(self, messages: list[dict[str, str]] | list[list[dict[str, str]]],
             sampling_params: SamplingParams | None = None, **kw: Any) -> list[RequestOutput]:
        """Apply the model's chat template to one conversation (or a list of them) and generate."""
        convs = [messages] if messages and isinstance(messages[0], dict) else messages
        prompts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                   for c in convs]  # type: ignore[arg-type]
        return self.generate(prompts, sampling_params, **kw)
