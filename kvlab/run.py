"""``python -m kvlab.run [group=choice ...] [key=value ...]``: run one experiment (Hydra main).

Composes allocator / scheduler / executor / model / hardware / workload from ``conf/``, replays
the workload, writes ``metrics.json``, ``requests.csv``, ``steps.csv`` and ``config.yaml`` under
``results/<experiment>/<timestamp>/``, prints a one-screen summary and, as its last line,
``results: <directory>``. ``-m`` sweeps run in parallel through the joblib launcher.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from kvlab.summary import print_summary


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from kvlab.experiment import run_experiment

    out_dir = cfg.output_dir or HydraConfig.get().runtime.output_dir
    try:
        result = run_experiment(cfg, out_dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print_summary(cfg, result)
    print(f"results: {out_dir}", flush=True)
    return float(result["metrics"].get("output_throughput", 0.0))


if __name__ == "__main__":
    main()
