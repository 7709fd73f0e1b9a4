"""Figure specifications: ``conf/experiment/paper_*.yaml`` -> runnable :class:`Job` lists.

Each experiment yaml carries a ``paper:`` block (panels, systems, trace lengths, sweep settings);
this module turns it into jobs for the ``full`` or ``quick`` mode. A job's Hydra overrides always
start with ``+experiment=<file> +experiment/system=<system>``, so a job is reproducible by hand
with ``python -m kvlab.run`` and the same overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
EXP_DIR = CONF_DIR / "experiment"
SWEEP_FIGURES = ("fig12", "fig14", "fig16", "fig17")


@dataclass
class Job:
    """One unit of parallel work: a single run (``rates`` of length 1, no sweep) or an adaptive
    rate sweep (``sweep`` set). ``key`` names its result directory."""

    figure: str
    panel: str
    system: str
    overrides: list[str]
    rates: list[float]
    sweep: dict[str, Any] | None = None
    threshold: float = 0.5
    tags: dict[str, Any] = field(default_factory=dict)

    def override(self, group: str) -> str:
        """The value of the ``group=value`` override this job runs with ("" if none)."""
        return next((o.split("=", 1)[1] for o in self.overrides if o.startswith(f"{group}=")), "")

    @property
    def key(self) -> str:
        extra = "-".join(f"{k}{v}" for k, v in sorted(self.tags.items()))
        return "/".join(p for p in (self.figure, self.panel, self.system, extra) if p)


def load_spec(name: str) -> dict[str, Any]:
    """The ``paper:`` block of ``conf/experiment/paper_<name>.yaml``."""
    return yaml.safe_load((EXP_DIR / f"paper_{name}.yaml").read_text())["paper"]


def system_info(system: str) -> dict[str, Any]:
    """Label, colour and marker of a system (``conf/experiment/system/<system>.yaml``)."""
    return yaml.safe_load((EXP_DIR / "system" / f"{system}.yaml").read_text())["paper_system"]


def base_overrides(figure: str, system: str) -> list[str]:
    return [f"+experiment=paper_{figure}", f"+experiment/system={system}"]


def trace_len(spec: dict[str, Any], workload: str, mode: str) -> int:
    return int(spec["trace"][workload][mode])


def sweep_jobs(figure: str, mode: str) -> list[Job]:
    """Latency sweeps, one per (panel, system): rates at fractions of the system's saturated
    throughput (``paper.sweep.<mode>`` in the yaml; see ``jobs.run_job``)."""
    spec = load_spec(figure)
    sw = dict(spec["sweep"][mode])
    jobs = []
    for panel, p in spec["panels"].items():
        n = trace_len(spec, p["workload"], mode)
        for system in spec["systems"]:
            ov = base_overrides(figure, system) + list(p["overrides"]) + [f"workload.num_requests={n}"]
            jobs.append(Job(figure, panel, system, ov, [], sweep=sw,
                            threshold=float(spec["threshold_s_per_token"])))
    if figure == "fig12" and mode == "full":  # trace-length stability check
        st = spec["stability"]
        p = spec["panels"][st["panel"]]
        n = trace_len(spec, p["workload"], mode) * int(st["factor"])
        for system in st["systems"]:
            ov = base_overrides(figure, system) + list(p["overrides"]) + [f"workload.num_requests={n}"]
            jobs.append(Job("fig12_stability", st["panel"], system, ov, [], sweep=sw,
                            threshold=float(spec["threshold_s_per_token"]), tags={"n": n}))
    if figure == "fig14":
        sv = spec["sharegpt_savings"]
        for panel, p in spec["panels"].items():
            extra = [o for o in p["overrides"] if not o.startswith("workload=")]
            ov = (base_overrides(figure, "vllm") + list(sv["overrides"]) + extra
                  + [f"workload.num_requests={sv['trace'][mode]}"])
            jobs.append(Job("fig15_sharegpt", panel, "vllm", ov, [float(sv["rate"])]))
    return jobs


def point_jobs(figure: str, mode: str, capacity: dict[tuple[str, str, str], float],
               paper_capacity: dict[tuple[str, str], float]) -> list[Job]:
    """Fixed-rate runs of Figs. 13, 18b and 19b; rates may depend on kvlab's Fig. 12 capacities
    (``capacity[("fig12", panel, "vllm")]``)."""
    spec = load_spec(figure)
    jobs = []
    for panel, p in spec["panels"].items():
        n = trace_len(spec, p["workload"], mode)
        cap = capacity.get(("fig12", p["capacity_panel"], "vllm"), float("nan"))
        if figure == "fig13":
            scaled = p["rate"] * cap / paper_capacity[(p["capacity_panel"], "vllm")]
            for label, rate in (("paper_rate", p["rate"]), ("scaled_rate", scaled)):
                if rate != rate:  # NaN: no capacity measured
                    continue
                for system in spec["systems"]:
                    ov = (base_overrides(figure, system) + list(p["overrides"])
                          + [f"workload.num_requests={n}"])
                    jobs.append(Job(figure, panel, system, ov, [round(rate, 4)], tags={"at": label}))
            continue
        if cap != cap:
            continue
        rate = round(spec["load"] * cap, 4)
        modes = spec.get("preemption", [None])
        for bs in spec["block_sizes"]:
            for pre in modes:
                ov = base_overrides(figure, "vllm") + list(p["overrides"]) + [
                    f"workload.num_requests={n}", f"allocator.block_size={bs}"]
                tags: dict[str, Any] = {"bs": bs}
                if pre:
                    ov.append(f"scheduler.preemption={pre}")
                    tags["pre"] = pre
                jobs.append(Job(figure, panel, "vllm", ov, [rate], tags=tags))
    return jobs
