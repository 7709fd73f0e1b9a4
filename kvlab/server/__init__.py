"""The OpenAI-compatible server (``python -m kvlab.serve``): FastAPI app (api.py, chat.py),
wire protocol (protocol.py), request handling (generate.py), engine thread (async_engine.py),
Prometheus metrics (metrics.py), response formatting (outputs.py) and ``best=`` (best.py)."""
