"""Posterior estimation scored as the SBI benchmark (arXiv:2101.04653): C2ST at 10³, 10⁴, 10⁵
simulations.

For each task, budget and seed this trains the shipped config through the CLI
(``flowctl train config=posterior_<task> sims.n_train=N seed=S sims.seed=S``) and runs
``flowctl evaluate`` with the C2ST of 10 000 posterior draws against 10 000 reference draws
at each of the task's observations (5-fold MLP on standardised samples; 0.5 is perfect).
The observations are fixed for all runs: θ from the prior and x simulated with
``--obs-seed`` (these are *not* the benchmark's own ten observation files). ``--rounds R``
adds the sequential mode (truncated sequential NPE, one training of R rounds per
observation: ten times the work).

Results go to ``benchmarks/results/posterior-<stamp>.json`` after every run (``--resume FILE``
skips the runs already in it). Example (what the README table was made with is stored in the
results file under "command" and "commands")::

    OMP_NUM_THREADS=1 python benchmarks/posterior.py --tasks two_moons --budgets 1000 10000 \\
        100000 --seeds 0 1 2 --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import format_table, results_path, save_results
from flowctl.simulators import make_simulator

CONFIGS = {"two_moons": "posterior_moons", "slcp": "posterior_slcp",
           "gaussian_linear": "posterior_gaussian_linear"}
SIMULATORS = {"two_moons": {"kind": "two_moons"},
              "slcp": {"kind": "slcp"},
              "gaussian_linear": {"kind": "linear_gaussian", "params": {
                  "theta_dim": 10, "x_dim": 10, "prior_std": 0.1**0.5, "noise_std": 0.1**0.5,
                  "matrix": "identity"}}}
# the SBI benchmark's C2ST (arXiv:2101.04653, its figures; as quoted in issue 19)
PAPER = {("two_moons", "NPE"): {1000: 0.725, 10000: 0.606, 100000: 0.542},
         ("two_moons", "SNPE"): {1000: 0.643, 10000: 0.554, 100000: 0.530}}


def _flowctl(args: list[str], log: Path, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "flowctl", *args]
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write("$ " + shlex.join(cmd) + "\n")
        fh.flush()
        res = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                             timeout=timeout, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed with exit {res.returncode} (see {log})")
    return {"seconds": time.perf_counter() - t0}


def run_one(task: str, budget: int, seed: int, rounds: int, obs: np.ndarray, args: Any,
            work: Path, log: Path, prev: dict[str, Any] | None = None,
            save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """One (task, budget, seed, mode) point: train(s) + evaluate(s); C2ST per observation.

    Sequential mode (one training per observation): ``save`` gets the record after every
    observation (``"partial": true`` until the last), and a partial ``prev`` record from an
    interrupted run is continued from its next observation."""
    common = [f"seed={seed}", f"sims.seed={seed}", f"sims.n_train={budget}", *args.set]
    ev = [f"eval.c2st_draws={args.draws}", "eval.plots=false", f"eval.n_sbc={args.n_sbc}",
          "eval.n_post=100"]
    groups = ([obs] if rounds == 1 else
              [obs[i:i + 1] for i in range(min(len(obs), args.seq_observations))])
    keep = rounds > 1 and prev is not None and prev.get("set", []) == args.set
    rec: dict[str, Any] = {
        "task": task, "budget": budget, "seed": seed, "rounds": rounds,
        "mode": "NPE" if rounds == 1 else f"TSNPE-{rounds}",
        **({"set": args.set} if args.set else {}),
        **{k: list(prev.get(k, [])) if keep and prev else []
           for k in ("c2st_per_observation", "epochs", "steps", "train_cpu_s", "train_s_each")},
        "train_s": prev["train_s"] if keep and prev else 0.0,
        "eval_s": prev["eval_s"] if keep and prev else 0.0}
    for g, xo in enumerate(groups):
        if g < len(rec["c2st_per_observation"]):
            continue  # done in the interrupted run this continues
        run = work / f"{task}-{budget}-{seed}-r{rounds}-{g}"
        ofile = work / f"obs-{task}-{g}-{rounds}.csv"
        np.savetxt(ofile, xo, delimiter=",")
        extra = [f"sims.rounds={rounds}", f"observed={ofile}"] if rounds > 1 else []
        done = run / "metrics.json"
        if args.reuse and done.exists() and "train" in json.loads(done.read_text()):
            t = json.loads(done.read_text())["train"]["train_wall_s"]  # trained before
        else:
            t = _flowctl(["train", f"config={CONFIGS[task]}", f"run_dir={run}",
                          *common, *extra], log, args.timeout)["seconds"]
        rec["train_s"] = round(rec["train_s"] + t, 1)
        rec["eval_s"] = round(rec["eval_s"] + _flowctl(
            ["evaluate", f"run={run}", f"observed={ofile}", *ev], log, args.timeout)["seconds"], 1)
        m = json.loads((run / "metrics.json").read_text())
        rec["c2st_per_observation"] += m["evaluate"]["c2st"]["c2st_per_observation"]
        rec["epochs"].append(m["train"]["epochs"])
        rec["train_s_each"].append(round(t, 1))
        rs = m["train"].get("rounds") or []
        rs = rs + ([m["train"]["refine"]] if m["train"].get("refine") else [])  # the last fit
        rec["steps"].append(sum(r.get("steps") or 0 for r in rs) if rs
                            else m["train"].get("steps"))
        if rs and all("cpu_s" in r for r in rs):
            rec["train_cpu_s"].append(round(sum(r["cpu_s"] for r in rs), 1))
        per = rec["c2st_per_observation"]
        rec.update(c2st=float(np.mean(per)), n_observations=len(per))
        rec["partial"] = g < len(groups) - 1
        if save is not None and rec["partial"]:
            save(rec)
    rec["partial"] = False
    return rec


def table(records: list[dict[str, Any]]) -> str:
    """Median [min, max] over seeds of the per-seed C2ST (each a mean over observations)."""
    rows = []
    keys = sorted({(r["task"], r["budget"], r["mode"]) for r in records})
    for task, budget, mode in keys:
        sel = [r for r in records if (r["task"], r["budget"], r["mode"]) == (task, budget, mode)]
        vals = [r["c2st"] for r in sel]
        paper = PAPER.get((task, "NPE" if mode == "NPE" else "SNPE"), {}).get(budget)
        spread = f" [{min(vals):.3f}, {max(vals):.3f}]" if len(vals) > 1 else ""
        rows.append([task, mode, f"{budget:g}", f"{np.median(vals):.3f}{spread}",
                     " ".join(str(r["seed"]) for r in sel),
                     "/".join(str(r["n_observations"]) for r in sel),
                     f"{paper:.3f}" if paper else "-"])
    return format_table(["task", "mode", "simulations", "C2ST median [min, max] over seeds",
                         "seeds", "observations", "SBI benchmark"], rows)


def merged(paths: list[Path]) -> list[dict[str, Any]]:
    """The records of several results files; a (task, budget, seed, rounds) point found twice
    keeps the later file's."""
    out: dict[tuple, dict[str, Any]] = {}
    for path in paths:
        for r in json.loads(path.read_text()).get("records", []):  # profiles have none
            out[(r["task"], r["budget"], r["seed"], r["rounds"])] = {**r, "file": path.name}
    return list(out.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["two_moons"], choices=list(CONFIGS))
    ap.add_argument("--budgets", nargs="+", type=int, default=[1000, 10000, 100000])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--rounds", nargs="+", type=int, default=[1],
                    help="1: NPE; R > 1: sequential (TSNPE) with R rounds (one run per obs.)")
    ap.add_argument("--observations", type=int, default=10)
    ap.add_argument("--obs-seed", type=int, default=12345)
    ap.add_argument("--seq-observations", type=int, default=10,
                    help="sequential mode: the first K observations only (one training each)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra config overrides for every training (kept in each record)")
    ap.add_argument("--draws", type=int, default=10000)
    ap.add_argument("--n-sbc", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--resume", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help="run directories (default: temp)")
    ap.add_argument("--reuse", action="store_true",
                    help="evaluate a run directory of --work that already finished training")
    ap.add_argument("--table", type=Path, nargs="+", default=None,
                    help="only print the table of these results files (no runs)")
    args = ap.parse_args()
    if args.table:
        print(table(merged(args.table)))
        return
    path = args.resume or results_path("posterior")
    payload: dict[str, Any] = (json.loads(path.read_text()) if args.resume and path.exists()
                               else {"records": []})
    payload.setdefault("commands", []).append(
        "OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "") + " "
        + shlex.join(["python", "benchmarks/posterior.py", *sys.argv[1:]]))
    payload.setdefault("protocol", (
        "C2ST (5-fold MLP, hidden 10·D ×2, z-scored by the reference) of the flow's draws "
        "(inside the prior box) vs reference draws, averaged over the observations; "
        f"{args.observations} observations from the prior with seed {args.obs_seed} (not the "
        "benchmark's files); references: exact (Gaussian linear, two moons), MCMC (SLCP)"))
    done = {(r["task"], r["budget"], r["seed"], r["rounds"]) for r in payload["records"]
            if not r.get("partial")}
    work = args.work or Path(tempfile.mkdtemp(prefix="posterior-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log = path.with_suffix(".log")
    for task in args.tasks:
        sim = make_simulator(SIMULATORS[task])
        _, obs = sim.sample_joint(args.observations, np.random.default_rng(args.obs_seed))
        for budget in args.budgets:
            for rounds in args.rounds:
                for seed in args.seeds:
                    if (task, budget, seed, rounds) in done:
                        continue
                    key = (task, budget, seed, rounds)
                    prev = next((r for r in payload["records"] if r.get("partial")
                                 and (r["task"], r["budget"], r["seed"], r["rounds"]) == key),
                                None)

                    def save(rec: dict[str, Any], key: tuple = key) -> None:
                        payload["records"] = [r for r in payload["records"] if (
                            r["task"], r["budget"], r["seed"], r["rounds"]) != key
                            or not r.get("partial")] + [dict(rec)]
                        save_results(path, payload)

                    rec = run_one(task, budget, seed, rounds, obs, args, work, log, prev, save)
                    save(rec)
                    print(f"{task} {rec['mode']} N={budget} seed={seed}: C2ST {rec['c2st']:.3f}"
                          f" (train {rec['train_s']:.0f} s, evaluate {rec['eval_s']:.0f} s)",
                          flush=True)
    print(table(payload["records"]))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
