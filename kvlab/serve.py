"""``python -m kvlab.serve [group=choice ...] [server.port=8000 ...]``: the OpenAI-compatible server.

Configured by ``conf/serve.yaml``: the same allocator / scheduler / executor / model groups and
root keys (``device``, ``dtype``, ``kv.*``) as ``kvlab.run``, plus ``server.host``,
``server.port`` and ``server.api_key``. ``best=<sweep dir>`` (short for ``best.dir=...``, with
``best.metric`` and ``best.mode``) serves the configuration that won a finished sweep; see
:mod:`kvlab.server.best` and docs/serving.md. Builds the engine (loading the model), prints the
address, model, allocator and KV capacity, and serves until interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def build_server(cfg: dict[str, Any]) -> tuple[Any, Any]:
    """(FastAPI app, AsyncEngine) for a resolved config; the engine thread is not started yet."""
    from kvlab.engine import LLMEngine
    from kvlab.server.api import create_app
    from kvlab.server.async_engine import AsyncEngine
    from kvlab.server.generate import Serving
    from kvlab.server.metrics import ServerMetrics

    srv = cfg.get("server") or {}
    engine = LLMEngine(cfg)
    name = srv.get("served_model_name") or cfg["model"]["name"]
    aengine = AsyncEngine(engine, ServerMetrics(engine, name), int(srv.get("max_records") or 10_000))
    serving = Serving(aengine, name, engine.max_model_len, int(cfg["model"]["vocab_size"]), engine.tokenizer)
    return create_app(serving, srv.get("api_key")), aengine


def banner(cfg: dict[str, Any], aengine: Any) -> str:
    e = aengine.engine
    srv = cfg["server"]
    a, s = cfg["allocator"], cfg["scheduler"]
    dtype = getattr(e.executor, "dtype", cfg.get("dtype"))
    gemm = getattr(e.executor, "gemm", None)
    return "\n".join(
        [
            f"kvlab serve: http://{srv['host']}:{srv['port']}/v1  (health /health, metrics /metrics)",
            f"  model      {srv.get('served_model_name') or cfg['model']['name']} "
            f"(executor={cfg['executor']['name']}, "
            f"dtype={dtype}{f', gemm={gemm}' if gemm else ''}, max_model_len={e.max_model_len})",
            f"  allocator  {a['name']} (block_size={e.block_size}) | scheduler {s['name']} "
            f"(max_num_seqs={s.get('max_num_seqs')})",
            f"  KV cache   {e.kv_capacity_tokens} tokens = {e.allocator.num_blocks} blocks x {e.block_size} "
            f"({e.allocator.num_blocks * e.block_bytes / 2**30:.2f} GiB)",
            f"  api key    {'required' if srv.get('api_key') else 'none'}",
        ]
    )


def serve(cfg: dict[str, Any]) -> None:
    """Build the server and run it until interrupted (blocking): uvicorn in a thread, the engine
    loop on this (the main) thread — see :mod:`kvlab.server.async_engine` for why."""
    import signal
    import threading

    import uvicorn

    app, aengine = build_server(cfg)
    print(banner(cfg, aengine), flush=True)
    srv = cfg["server"]
    server = uvicorn.Server(uvicorn.Config(
        app,
        host=str(srv["host"]),
        port=int(srv["port"]),
        log_level="warning",
        access_log=bool(srv.get("log_requests")),
        timeout_graceful_shutdown=2,
    ))
    http = threading.Thread(target=server.run, name="kvlab-http", daemon=True)

    def stop(signum: int, frame: Any) -> None:  # flags only: this interrupts the engine loop
        server.should_exit = True
        aengine.request_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    http.start()
    try:
        aengine.run(keep_going=http.is_alive)  # returns on a signal or when uvicorn exits
    finally:
        server.should_exit = True
        aengine.shutdown()
        http.join(timeout=10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:  # e.g. the port was taken: uvicorn logged why and exited
        raise SystemExit(1)


def resolve_best(cfg: dict[str, Any], cli: list[str]) -> dict[str, Any]:
    """Re-compose the config with the winning sweep configuration under the command line's keys."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from kvlab.config_check import as_plain
    from kvlab.llm import CONF_DIR
    from kvlab.server.best import best_overrides, pick_best

    b = cfg["best"]
    best = pick_best(b["dir"], b.get("metric") or "output_throughput", b.get("mode") or "max")
    print(best.summary(), flush=True)
    overrides = best_overrides(best, cli)
    print("serving with: " + " ".join(overrides), flush=True)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return as_plain(compose(config_name="serve", overrides=overrides + cli))


@hydra.main(config_path="../conf", config_name="serve", version_base="1.3")
def main(dcfg: DictConfig) -> None:
    from kvlab.config_check import as_plain

    cfg = as_plain(dcfg)
    try:
        if (cfg.get("best") or {}).get("dir"):
            cfg = resolve_best(cfg, list(HydraConfig.get().overrides.task))
        serve(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _shorthand(argv: list[str]) -> list[str]:
    """``best=DIR`` -> ``best.dir=DIR`` (``best`` is a config node, not a group)."""
    return [f"best.dir={a[5:]}" if a.startswith("best=") else a for a in argv]


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *_shorthand(sys.argv[1:])]
    main()
