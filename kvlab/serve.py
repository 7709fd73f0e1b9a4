"""``python -m kvlab.serve [group=choice ...] [server.port=8000 ...]``: the OpenAI-compatible server.

Configured by ``conf/serve.yaml``: the same allocator / scheduler / executor / model groups and
root keys (``device``, ``dtype``, ``kv.*``) as ``kvlab.run``, plus ``server.*`` (host, port, the
API key from a file / an environment variable / the command line, body-size limit, stall timeout
of ``/health``, shutdown grace period). ``best=<sweep dir>`` (short for ``best.dir=...``, with
``best.metric`` and ``best.mode``) serves the configuration that won a finished sweep; see
:mod:`kvlab.server.best` and docs/serving.md. Builds the engine (loading the model), prints the
address, model, allocator and KV capacity, and serves until interrupted. The first SIGINT/SIGTERM
drains: the port closes, requests in flight run on for ``server.shutdown_grace_s`` seconds, then
each is ended (streams with an error event and ``[DONE]``); a second signal stops at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def resolve_api_key(srv: dict[str, Any]) -> str | None:
    """The API key: ``server.api_key_file`` (first line), else the environment variable named by
    ``server.api_key_env`` (default ``KVLAB_API_KEY``), else ``server.api_key`` (visible in ``ps``:
    prefer the other two). None = no key."""
    path = srv.get("api_key_file")
    if path:
        try:
            key = Path(str(path)).expanduser().read_text().strip().splitlines()
        except OSError as e:
            raise ValueError(f"server.api_key_file={path!r} cannot be read: {e.strerror}") from None
        if not key or not key[0].strip():
            raise ValueError(f"server.api_key_file={path!r} is empty")
        return key[0].strip()
    env = srv.get("api_key_env") or "KVLAB_API_KEY"
    if os.environ.get(env):
        return os.environ[env].strip()
    return str(srv["api_key"]) if srv.get("api_key") else None


def build_server(cfg: dict[str, Any]) -> tuple[Any, Any]:
    """(FastAPI app, AsyncEngine) for a resolved config; the engine thread is not started yet."""
    from kvlab.engine import LLMEngine
    from kvlab.kv_quant_format import KVQuantConfig
    from kvlab.server.api import ServerOptions, create_app
    from kvlab.server.async_engine import AsyncEngine
    from kvlab.server.generate import Serving
    from kvlab.server.prometheus import ServerMetrics

    srv = cfg.get("server") or {}
    opts = ServerOptions(
        api_key=resolve_api_key(srv),
        max_body_bytes=_positive(srv, "max_body_bytes", 4 << 20, int),
        stall_timeout_s=_positive(srv, "stall_timeout_s", 60.0, float),
        dashboard=bool(srv.get("dashboard", True)),
        dashboard_hz=_positive(srv, "dashboard_hz", 4.0, float),
    )
    engine = LLMEngine(cfg, max_records=_positive(srv, "max_records", 10_000, int))
    name = srv.get("served_model_name") or cfg["model"]["name"]
    kv_format = {"scheme": KVQuantConfig.from_config(engine.cfg).name,
                 "bytes_per_token": f"{engine.block_bytes / engine.block_size:g}"}
    aengine = AsyncEngine(engine, ServerMetrics(lambda: engine.stats, name, kv_format=kv_format))
    serving = Serving(aengine, name, engine.max_model_len, int(cfg["model"]["vocab_size"]), engine.tokenizer)
    return create_app(serving, opts), aengine


def _positive(srv: dict[str, Any], key: str, default: Any, kind: type) -> Any:
    value = srv.get(key)
    if value is None:
        return default
    try:
        v = kind(value)
    except (TypeError, ValueError):
        v = 0
    if v <= 0:
        raise ValueError(f"server.{key}={value!r}: must be a positive number")
    return v


def _kv_format(cfg: dict[str, Any]) -> str:
    from kvlab.kv_quant_format import KVQuantConfig

    q = KVQuantConfig.from_config(cfg)
    knobs = ", ".join(f"{k}={v}" for k, v in q.knobs.items())
    return q.name + (f" ({knobs})" if knobs else "")


def banner(cfg: dict[str, Any], aengine: Any) -> str:
    e = aengine.engine
    srv = cfg["server"]
    a, s = cfg["allocator"], cfg["scheduler"]
    dtype = getattr(e.executor, "dtype", cfg.get("dtype"))
    gemm = getattr(e.executor, "gemm", None)
    precision = getattr(e.executor, "precision", None)  # the torch executor's run-time choice, and why
    return "\n".join(
        [
            f"kvlab serve: http://{srv['host']}:{srv['port']}/v1  (health /health, metrics /metrics"
            f"{', block map /dashboard' if srv.get('dashboard', True) else ''})",
            f"  model      {srv.get('served_model_name') or cfg['model']['name']} "
            f"(executor={cfg['executor']['name']}, "
            f"dtype={dtype}{f', gemm={gemm}' if gemm else ''}, max_model_len={e.max_model_len})",
            *([f"  precision  {precision.summary()}"] if precision is not None else []),
            f"  allocator  {a['name']} (block_size={e.block_size}) | scheduler {s['name']} "
            f"(max_num_seqs={s.get('max_num_seqs')})",
            f"  KV cache   {e.kv_capacity_tokens} tokens = {e.allocator.num_blocks} blocks x {e.block_size} "
            f"({e.allocator.num_blocks * e.block_bytes / 2**30:.2f} GiB), kv_quant={_kv_format(cfg)} "
            f"({e.block_bytes / e.block_size:g} bytes/token)",
            f"  api key    {'required' if resolve_api_key(srv) else 'none'} (open without a key: /health, "
            "/metrics)",
        ]
    )


def serve(cfg: dict[str, Any]) -> None:
    """Build the server and run it until interrupted (blocking): uvicorn in a thread, the engine
    loop on this (the main) thread — see :mod:`kvlab.server.async_engine` for why."""
    import signal
    import threading

    import uvicorn

    srv = cfg["server"]
    _check_port_free(str(srv["host"]), int(srv["port"]))  # fail before spending a minute loading the model
    app, aengine = build_server(cfg)
    print(banner(cfg, aengine), flush=True)
    grace = float(srv.get("shutdown_grace_s") if srv.get("shutdown_grace_s") is not None else 30.0)
    server = uvicorn.Server(uvicorn.Config(
        app,
        host=str(srv["host"]),
        port=int(srv["port"]),
        log_level="warning",
        access_log=bool(srv.get("log_requests")),
        # backstop only: the drain below ends every request within the grace period
        timeout_graceful_shutdown=int(grace) + 10,
    ))
    http = threading.Thread(target=server.run, name="kvlab-http", daemon=True)
    signals = {"n": 0}

    def stop(signum: int, frame: Any) -> None:  # flags only: this interrupts the engine loop
        signals["n"] += 1
        if signals["n"] == 1:  # stop accepting; in-flight requests run on for the grace period
            print(f"kvlab serve: {signal.Signals(signum).name}: stopping (grace {grace:g} s; "
                  "again to stop now)", file=sys.stderr, flush=True)
            server.should_exit = True
            aengine.begin_drain(grace)
        else:
            aengine.begin_drain(0.0)
            aengine.request_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    http.start()
    try:
        aengine.run(keep_going=http.is_alive)  # returns when uvicorn exits (after a drain) or on a 2nd signal
    finally:
        server.should_exit = True
        aengine.shutdown()
        http.join(timeout=10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:  # e.g. the port was taken: uvicorn logged why and exited
        raise SystemExit(1)


def _check_port_free(host: str, port: int) -> None:
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                print(f"error: cannot serve on {host}:{port}: address already in use", file=sys.stderr, flush=True)
                raise SystemExit(1) from None
            raise


def resolve_best(cfg: dict[str, Any], cli: list[str]) -> dict[str, Any]:
    """Re-compose the config with the winning sweep configuration under the command line's keys."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from kvlab.config_check import as_plain
    from kvlab.llm import CONF_DIR
    from kvlab.server.best import best_overrides, pick_best

    b = cfg["best"]
    best = pick_best(b["dir"], b.get("metric") or "output_throughput", b.get("mode") or "max",
                     b.get("max_ppl_delta_pct"))
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
