"""Shower generation time on the CaloChallenge geometries: ms per shower at batch 10 000.

For DS1 photons, DS1 pions (CaloFlow: Flow I + one Flow II over all voxels) and DS2
(iCaloFlow: Flow I + a layer-0 flow + one flow applied layer after layer, 45 steps), teacher
(MAF: sampling inverts D-dimensional autoregressive transforms) and student (IAF: one pass
per transform), on CPU with 1 and 2 threads (``--device cuda`` on a GPU).

The flows have the sizes of the shipped configs (``caloflow_ds1``, ``caloflow_ds2``) and of
the challenge submissions where known (reference/caloflow.md §3.3, §4.1): DS1 photons teacher
MADE width 378, student 736; DS1 pions teacher 533, student 500; DS2 (our choice) 256 for
both. Weights are freshly initialised, not trained: the time of a pass does not depend on the
weight values (the flows are the same code path as ``flowctl sample``: ``ShowerSampler`` and
``_energy_to_context`` of :mod:`flowctl.apps.calo`). Reported per shower: the whole chain
(Flow I, contexts, shower flows) and, separately, the shower flow(s) only.

Usage::

    python benchmarks/calo_sampling.py [--datasets ds1_photons ds1_pions ds2] [--threads 1 2]
        [--batch 10000] [--reps 2] [--device cpu]

Results: ``benchmarks/results/calo_sampling-<stamp>.json``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# OpenMP's wait policy as the user's environment has it: PASSIVE (set here before
# 2026-12-01) makes the threads sleep between the incremental MAF inverse's thousands of small
# parallel regions and made two threads slower than one (DS1 photons teacher 1.74 vs 1.22 ms,
# results/calo_sampling-20261201-075923.json).

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse
import time
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks.common import (
    count_parameters,
    format_table,
    machine_info,
    results_path,
    save_results,
)
from flowctl.apps.calo import (
    ShowerSampler,
    _build,
    _energy_to_context,
    _fill,
    _student_of,
)
from flowctl.calo.geometry import load_binning

#: MADE widths of the challenge submissions (CaloFlow DS1, ref §3.3 / §4.1) and ours for DS2.
WIDTHS = {"ds1_photons": (378, 736), "ds1_pions": (533, 500), "ds2": (256, 256)}
#: Published GPU figures at batch 10 000 (ms per shower; reference/caloflow.md §4.4, §9).
PUBLISHED = {"ds1_photons": {"teacher": 8.13, "student": 0.26},
             "ds1_pions": {"teacher": 17.7, "student": 0.25},
             "ds2": {"iCaloFlow student": 1.45, "L2LFlows": 1.64}}


def _config(name: str) -> dict[str, Any]:
    cfg_name = "caloflow_ds2" if name == "ds2" else "caloflow_ds1"
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        c = compose(cfg_name, overrides=[f"data.binning={name}"])
    return OmegaConf.to_container(c, resolve=True)  # type: ignore[return-value]


def build(name: str, role: str, iaf_map: str | None = None
          ) -> tuple[torch.nn.Module, ShowerSampler, dict[str, Any]]:
    """(Flow I, shower sampler, config) with the benchmark's sizes; a student samples through
    ``iaf_map`` (default: the config's ``student.flow.iaf_map``, as ``flowctl distill``)."""
    cfg = _config(name)
    if iaf_map is None:
        iaf_map = ((cfg.get("student") or {}).get("flow") or {}).get("iaf_map", "forward")
    g = load_binning(name)
    n_layers, sizes = len(g.layers), g.layer_sizes
    teacher_w, student_w = WIDTHS[name]
    flow1 = _build(_fill(dict(cfg["energy_flow"]), "energy_flow", n_layers, 1))
    tspec = {**cfg["flow"], "hidden": [teacher_w, teacher_w]}
    if cfg.get("model") == "layerwise":
        vl = sizes[0]
        fspec = _fill({**cfg["flow_first"], "hidden": [teacher_w, teacher_w]}, "flow_first",
                      vl, 2)
        tspec = _fill(tspec, "flow", vl, 3 + (n_layers - 1) + vl)
        if role == "student":
            over = {"hidden": [student_w, student_w], "dropout": 0.0, "iaf_map": iaf_map}
            fspec, tspec = _student_of(fspec, over), _student_of(tspec, over)
        sampler = ShowerSampler(_build(tspec, sizes), sizes, _build(fspec, sizes))
    else:
        tspec = _fill(tspec, "flow", g.n_voxels, 1 + n_layers)
        if role == "student":
            tspec = _student_of(tspec, {"hidden": [student_w, student_w], "iaf_map": iaf_map})
        sampler = ShowerSampler(_build(tspec, sizes), sizes)
    sampler.flow.eval()
    if sampler.first is not None:
        sampler.first.eval()
    return flow1.eval(), sampler, cfg


def time_chain(flow1: torch.nn.Module, sampler: ShowerSampler, cfg: dict[str, Any], batch: int,
               dev: torch.device) -> tuple[float, float]:
    """Seconds for one batch: (whole chain, shower flows only)."""
    pre = cfg["preprocessing"]
    e_inc = 10.0 ** (torch.rand(batch, device=dev) * 4.0 - 0.6)  # 0.25 GeV - 2.5 TeV
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.no_grad():
        sync()
        t0 = time.perf_counter()
        _, ctx = _energy_to_context(flow1, e_inc, float(pre["u0_scale"]),
                                    float(pre["e_ref_gev"]))
        sync()
        t1 = time.perf_counter()
        x = sampler.sample(ctx)
        sync()
        t2 = time.perf_counter()
    assert x.shape[0] == batch
    return t2 - t0, t2 - t1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["ds1_photons", "ds1_pions", "ds2"],
                    choices=sorted(WIDTHS))
    ap.add_argument("--roles", nargs="+", default=["teacher", "student"],
                    choices=["teacher", "student", "student-forward", "student-inverse"],
                    help="student: the config's iaf_map; student-forward/-inverse: that map")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batch", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--malloc", default="tuned", choices=["default", "tuned"],
                    help="tuned (default): glibc thresholds as the flowctl command sets them")
    args = ap.parse_args(argv)
    from flowctl.allocator import tune_malloc

    malloc_tuned = args.malloc == "tuned" and tune_malloc()
    dev = torch.device(args.device)
    path = results_path("calo_sampling")
    payload: dict[str, Any] = {"benchmark": "calo_sampling", "batch": args.batch,
                               "reps": args.reps, "machine": machine_info(dev, {}),
                               "command": "python benchmarks/calo_sampling.py "
                               + " ".join(argv if argv is not None else sys.argv[1:]),
                               "published_gpu_ms_per_shower": PUBLISHED,
                               "malloc_tuned": malloc_tuned, "results": []}
    rows = []
    for name in args.datasets:
        for role in args.roles:
            torch.manual_seed(0)
            base_role, _, iaf_map = role.partition("-")  # student-forward / student-inverse
            flow1, sampler, cfg = build(name, base_role, iaf_map or None)
            flow1.to(dev)
            sampler.flow.to(dev)
            if sampler.first is not None:
                sampler.first.to(dev)
            params = count_parameters(sampler.flow) + (
                count_parameters(sampler.first) if sampler.first is not None else 0)
            for th in args.threads:
                torch.set_num_threads(th)
                time_chain(flow1, sampler, cfg, min(200, args.batch), dev)  # warm-up
                runs = [time_chain(flow1, sampler, cfg, args.batch, dev)
                        for _ in range(args.reps)]
                best = min(runs)
                rec = {"dataset": name, "role": role, "threads": th, "device": str(dev),
                       "iaf_map": None if base_role == "teacher" else (
                           iaf_map or cfg["student"]["flow"].get("iaf_map", "forward")),
                       "shower_flow_parameters": params,
                       "energy_flow_parameters": count_parameters(flow1),
                       "ms_per_shower": round(1e3 * best[0] / args.batch, 4),
                       "shower_flow_ms_per_shower": round(1e3 * best[1] / args.batch, 4),
                       "all_reps_s": [round(r[0], 3) for r in runs],
                       "load_average": os.getloadavg()[0]}
                payload["results"].append(rec)
                rows.append([name, role, str(th), f"{params:,}", f"{rec['ms_per_shower']:.3f}",
                             f"{rec['shower_flow_ms_per_shower']:.3f}"])
                print(f"{name} {role} threads={th}: {rec['ms_per_shower']:.3f} ms per shower "
                      f"(shower flows {rec['shower_flow_ms_per_shower']:.3f}); load "
                      f"{rec['load_average']:.1f}", flush=True)
                if not args.no_save:
                    save_results(path, payload)
    print(format_table(["dataset", "model", "threads", "shower-flow params",
                        "ms/shower", "shower flows ms/shower"], rows))
    if not args.no_save:
        print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
