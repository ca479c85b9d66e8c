"""CaloFlow on synthetic CaloChallenge DS1 files at a CPU-affordable setting: teacher and
student, evaluated with the challenge's features, separation powers and classifier AUCs.

The files come from :mod:`flowctl.data.synth.challenge` (a parametric toy in the challenge's
format, not Geant4), so the AUCs say how well the flows learn *that* toy at this budget; they
are not comparable to the challenge's published numbers on Geant4 showers.

Per dataset: a training file (``--n``) and a reference file (``--n-ref``, another seed);
``flowctl train config=caloflow_ds1`` with ``--overrides`` (CPU-sized), ``sample
energies=REFERENCE`` (the challenge's way), ``evaluate`` (truth: the training file's 30 % test
split), ``distill run=R`` and ``evaluate`` of the student. Every command, its wall time and
the runs' metrics.json sections go to ``benchmarks/results/calo_challenge-<stamp>.json``.

Usage::

    python benchmarks/calo_challenge.py [--datasets ds1_photons ds1_pions] [--n 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import machine_info, results_path, save_results

#: CPU-sized settings (the paper's are GPU-sized: MADE width 378/533, 100 epochs).
OVERRIDES = ["flow.hidden=[128,128]", "trainer.epochs=10", "milestone_epochs=[6,9]",
             "trainer.lr=5e-4", "energy_trainer.epochs=30", "energy_milestone_epochs=[20]",
             "classifier.hidden=[256,256,256]", "classifier.epochs=30",
             "classifier.patience=8", "classifier.lr=5e-4", "classifier.bootstrap=100",
             "sample.batch=5000", "sample.device=cpu", "trainer.device=cpu"]
STUDENT = ["student.flow.hidden=[128,128]", "student.trainer.epochs=5",
           "student.trainer.lr=5e-4", "student.milestone_epochs=[4]"]


def _run(args: list[str], log: list[dict[str, Any]]) -> None:
    cmd = [sys.executable, "-m", "flowctl", *args]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = round(time.perf_counter() - t0, 1)
    log.append({"command": "flowctl " + " ".join(args), "wall_s": wall, "rc": res.returncode,
                "stdout_tail": res.stdout.strip().splitlines()[-4:]})
    print(f"[{wall:7.1f} s] flowctl {' '.join(args[:2])} ... rc={res.returncode}", flush=True)
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["ds1_photons", "ds1_pions"])
    ap.add_argument("--n", type=int, default=5000, help="training-file showers")
    ap.add_argument("--n-ref", type=int, default=3000, help="reference-file showers")
    ap.add_argument("--out", default="outputs/calo-challenge-bench")
    ap.add_argument("--teacher-only", action="store_true", help="skip the student")
    args = ap.parse_args(argv)
    import torch

    from flowctl.data.synth.challenge import write

    out = Path(args.out)
    path = results_path("calo_challenge")
    payload: dict[str, Any] = {"benchmark": "calo_challenge", "n_train_file": args.n,
                               "n_reference_file": args.n_ref, "overrides": OVERRIDES,
                               "student_overrides": STUDENT,
                               "machine": machine_info(torch.device("cpu"), {}),
                               "command": "python benchmarks/calo_challenge.py "
                               + " ".join(argv if argv is not None else sys.argv[1:]),
                               "results": {}}
    for name in args.datasets:
        log: list[dict[str, Any]] = []
        data, ref, run = out / f"{name}.h5", out / f"{name}_reference.h5", out / name
        write(data, name, args.n, seed=0)
        write(ref, name, args.n_ref, seed=1)
        _run(["train", "config=caloflow_ds1", f"data.path={data}", f"data.binning={name}",
              f"run_dir={run}", *OVERRIDES, *STUDENT], log)
        _run(["sample", f"run={run}", f"energies={ref}"], log)
        _run(["evaluate", f"run={run}"], log)
        if not args.teacher_only:
            _run(["distill", f"run={run}"], log)
            _run(["sample", f"run={run / 'student'}", f"energies={ref}"], log)
            _run(["evaluate", f"run={run / 'student'}"], log)
        t = json.loads((run / "metrics.json").read_text())
        models = {"teacher": t}
        if not args.teacher_only:
            models["student"] = json.loads((run / "student" / "metrics.json").read_text())
        payload["results"][name] = {"commands": log, **models}
        save_results(path, payload)
        for role, m in models.items():
            c = m["evaluate"]["classifier"]
            print(f"{name} {role}: AUC low_normed {c['low_normed']['auc']:.3f}, high "
                  f"{c['high']['auc']:.3f}; mean separation power "
                  f"{m['evaluate']['mean_separation_power']:.4f}", flush=True)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
