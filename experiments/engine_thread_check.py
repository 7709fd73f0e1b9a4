"""Is torch slower when the engine runs outside the main thread? (why kvlab.serve steps on main)

Decodes a batch of sequences with the torch executor (``experiments/model_bench.py``: ``decode_tok_s``),
alternately from the main thread and from a freshly started thread, and prints tokens/s and
process CPU time per wall second (2.0 = both cores busy on a 2-core machine).

    python experiments/engine_thread_check.py --threads 2 --batch 16 --rounds 2
"""

from __future__ import annotations

import argparse
import threading
import time

import torch
from model_bench import decode_tok_s  # experiments/ is on sys.path when run as a script

from kvlab.executor.torch_runner import TorchExecutor
from kvlab.models.config import resolve_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    ex = TorchExecutor(resolve_model("smollm2-135m"), device="cpu", dtype="float32", num_threads=args.threads)

    def measure(where: str) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        row = decode_tok_s(ex, args.batch, args.context, args.steps)
        ratio = (time.process_time() - cpu) / (time.perf_counter() - wall)
        print(f"{where:12s} {row['decode_tok_s']:7.1f} tok/s  cpu/wall {ratio:.2f}  "
              f"torch threads {torch.get_num_threads()}", flush=True)

    for _ in range(args.rounds):
        measure("main thread")
        t = threading.Thread(target=measure, args=("other thread",))
        t.start()
        t.join()


if __name__ == "__main__":
    main()
