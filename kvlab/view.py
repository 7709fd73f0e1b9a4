"""``python -m kvlab.view RESULTS_DIR``: replay a recorded run's KV block map in the browser.

The run must have been recorded with ``python -m kvlab.run ... record.blocks=true``. Serves the
dashboard page of ``kvlab.serve`` with a timeline slider over the recording at
``http://HOST:PORT/dashboard`` (default 127.0.0.1:8050) until interrupted, or, with
``--export run.gif`` (Pillow) / ``run.mp4`` (needs ffmpeg), writes an animation and exits.
"""

from __future__ import annotations

import argparse
import sys

from kvlab.dashboard.replay import Recording, load_recording


def build_app(rec: Recording):  # noqa: ANN201 - FastAPI app
    from fastapi import FastAPI

    from kvlab.dashboard.routes import add_replay_routes

    app = FastAPI(title="kvlab view", docs_url=None, redoc_url=None, openapi_url=None)
    add_replay_routes(app, rec)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kvlab.view", description=__doc__.splitlines()[0])
    p.add_argument("results_dir", help="a kvlab.run results directory recorded with record.blocks=true")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--export", metavar="FILE", help="write an animation (.gif or .mp4) instead of serving")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second of the export (default 8)")
    p.add_argument("--max-frames", type=int, default=None, help="export at most N evenly spaced frames")
    args = p.parse_args(argv)
    try:
        rec = load_recording(args.results_dir)
        if args.export:
            from kvlab.dashboard.export import export_animation

            n = export_animation(rec, args.export, fps=args.fps, max_frames=args.max_frames)
            print(f"wrote {args.export}: {n} frames", flush=True)
            return 0
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import uvicorn

    print(f"kvlab view: http://{args.host}:{args.port}/dashboard  ({len(rec.frames)} snapshots of "
          f"{rec.path})", flush=True)
    uvicorn.run(build_app(rec), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
