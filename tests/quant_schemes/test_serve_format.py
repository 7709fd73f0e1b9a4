"""The server runs a quantized cache: the banner and /metrics name the KV format."""

from __future__ import annotations

from fastapi.testclient import TestClient

from kvlab.serve import banner, build_server
from tests.quant_schemes.test_engine_schemes import tiny_cfg


def test_serve_reports_the_kv_format() -> None:
    cfg = tiny_cfg("int8")
    cfg["server"] = {"host": "127.0.0.1", "port": 0, "api_key": None, "api_key_env": "KVLAB_TEST_NO_SUCH_KEY"}
    app, aengine = build_server(cfg)
    text = banner(cfg, aengine)
    assert "kv_quant=int8" in text and "bytes/token" in text
    body = TestClient(app).get("/metrics").text
    line = next(x for x in body.splitlines() if x.startswith("kvlab:kv_cache_format_info{"))
    assert 'scheme="int8"' in line and line.endswith(" 1.0")
    bpt = aengine.engine.block_bytes / aengine.engine.block_size
    assert f'bytes_per_token="{bpt:g}"' in line
