"""Export a recorded run as an animation (GIF with Pillow, MP4 with ffmpeg) via matplotlib's writers.

Each frame shows the block grid in the page's colors (free, cached, in use in the owning
request's color -- darker as the block fills --, shared blocks darkened, reserved blocks light,
slack pink) beside the paper's four memory categories over the whole run with a cursor at the
frame's step.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np

from kvlab.allocator.block_map import CACHED, FREE, RESERVED, SHARED, SLACK
from kvlab.dashboard.replay import Recording
from kvlab.dashboard.snapshot import decode_arrays

CATEGORIES = (("token_states", "#2e7d32", "token states"), ("reservation", "#f9a825", "reservation"),
              ("internal_frag", "#c62828", "internal frag."), ("external_frag", "#b0bec5", "external frag. & other"))
FREE_RGB, CACHED_RGB, SLACK_RGB = (0.925, 0.937, 0.945), (0.565, 0.643, 0.682), (0.957, 0.561, 0.694)


def request_rgb(rid: str) -> np.ndarray:
    """A stable color per request id (hue from its CRC32)."""
    from matplotlib.colors import hsv_to_rgb

    return hsv_to_rgb(((zlib.crc32(rid.encode()) % 360) / 360.0, 0.75, 0.75))


def frame_image(snap: dict, cols: int) -> np.ndarray:
    """RGB image (rows x cols x 3) of one snapshot's blocks, row-major like the page."""
    a = decode_arrays(snap)
    n, bs = snap["num_blocks"], snap["block_size"]
    rgb = np.empty((n, 3))
    rgb[:] = FREE_RGB
    palette = np.array([request_rgb(r) for r in snap["requests"]] or [[0, 0, 0]])
    owned = a["owner"] > 0
    base = palette[np.maximum(a["owner"].astype(np.int64) - 1, 0)]
    frac = np.clip(a["fill"] / bs, 0, 1)[:, None]
    light = 1 - 0.35 * (1 - base)  # pale version of the request color: unwritten slots
    rgb[owned] = (light * (1 - frac) + base * frac)[owned]
    st = a["state"]
    rgb[st == RESERVED] = light[st == RESERVED]
    rgb[st == SHARED] = base[st == SHARED] * 0.45
    rgb[st == CACHED] = CACHED_RGB
    rgb[st == SLACK] = SLACK_RGB
    rgb[st == FREE] = FREE_RGB
    rows = math.ceil(n / cols)
    img = np.ones((rows * cols, 3))
    img[:n] = rgb
    return img.reshape(rows, cols, 3)


def export_animation(rec: Recording, path: str | Path, *, fps: float = 8.0, max_frames: int | None = None,
                     dpi: int = 80) -> int:
    """Write ``path`` (``.gif``: Pillow writer; ``.mp4``: ffmpeg writer, which must be installed).
    Returns the number of frames written (all, or ``max_frames`` evenly spaced ones)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import animation

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        writer: animation.AbstractMovieWriter = animation.PillowWriter(fps=fps)
    elif suffix == ".mp4":
        if not animation.writers.is_available("ffmpeg"):
            raise ValueError("--export .mp4 needs ffmpeg on the PATH; export a .gif instead (Pillow, offline)")
        writer = animation.FFMpegWriter(fps=fps)
    else:
        raise ValueError(f"--export {path.name}: the file must end in .gif or .mp4")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max-frames={max_frames}: must be a positive integer")
    idx = list(range(len(rec.frames)))
    if max_frames is not None and len(idx) > max_frames:
        idx = sorted({round(i * (len(idx) - 1) / (max_frames - 1)) for i in range(max_frames)}) if max_frames > 1 \
            else [len(idx) - 1]
    first = rec.frame(0)
    n = first["num_blocks"]
    cols = max(1, math.ceil(math.sqrt(n * 1.6)))
    series = rec.series
    steps = np.array([s["step"] for s in series])
    total = np.array([max(s["total_slots"], 1) for s in series], dtype=float)
    fig, (ax_grid, ax_mem) = plt.subplots(1, 2, figsize=(10, 4.4), gridspec_kw={"width_ratios": [1.6, 1]})
    im = ax_grid.imshow(frame_image(first, cols), interpolation="nearest", aspect="equal")
    ax_grid.set_xticks([])
    ax_grid.set_yticks([])
    ax_mem.stackplot(steps, *[np.array([s[k] for s in series]) / total for k, _, _ in CATEGORIES],
                     colors=[c for _, c, _ in CATEGORIES], labels=[label for _, _, label in CATEGORIES])
    ax_mem.set_ylim(0, 1)
    ax_mem.set_xlabel("engine step")
    ax_mem.set_ylabel("share of KV slots")
    ax_mem.legend(loc="upper right", fontsize=7)
    cursor = ax_mem.axvline(steps[0], color="black", lw=1)
    title = fig.suptitle("")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with writer.saving(fig, str(path), dpi):
        for i in idx:
            snap = rec.frame(i)
            im.set_data(frame_image(snap, cols))
            cursor.set_xdata([snap["step"], snap["step"]])
            st = snap["stats"]
            title.set_text(f"{snap.get('allocator') or 'kvlab'} · step {snap['step']} · t={snap['clock_s']:.2f} s · "
                           f"{st['blocks_in_use']}/{n} blocks in use · {len(snap['requests'])} requests")
            writer.grab_frame()
    plt.close(fig)
    return len(idx)
