"""CaloFlow v2 student vs its teacher on synthetic CaloGAN e+ at the README's CPU setting.

The chain (README "Calorimeter showers", CPU rows): 30k synthetic e+ showers (21k train / 9k
test), Flow I 20 epochs, Flow II teacher MAF H = 128 at lr 5e-4, then an IAF student H = 128
started from the teacher's conditioners (``distill.init=teacher``; copied as they are, since
``caloflow_student`` samples through the spline's inverse, ``flow.iaf_map: inverse``), the
lowest-KL epoch kept. ``--recipe cosine`` (default) trains it with Adam at ``--student-lr``
(cosine decay, 50 warm-up steps, no accumulation); ``--recipe v2`` with CaloFlow v2's gradient
accumulation (2/4/8/16 batches per step, lr halved at each change; the 100-epoch schedule
compressed to ``--student-epochs``). Both are evaluated with the CaloFlow classifier (10k
generated vs the 9k test showers). An existing teacher in ``--out`` is resumed, i.e. reused.

``--collect RUN_ROOT`` only gathers an existing chain's metrics.json files (the teacher and
every ``student*`` run), the students' per-epoch KL, its logs' commands and the wall times
recorded next to them (``t_*`` files, Unix seconds) into the results file.

Usage::

    python benchmarks/calo_student.py [--out outputs/calo-v2] [--teacher-epochs 8]
    python benchmarks/calo_student.py --collect outputs/calo-v2
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.cli_log import flowctl
from benchmarks.common import load_average, machine_info, results_path, save_results

EVAL = ["eval.n_samples=10000", "classifier.epochs=60", "classifier.patience=10"]


def teacher_args(data: Path, run: Path, epochs: int, milestones: list[int]) -> list[str]:
    return ["train", "config=caloflow_teacher", f"data.path={data}", f"run_dir={run}",
            "flow.hidden=[128,128]", f"trainer.epochs={epochs}",
            f"milestone_epochs=[{','.join(map(str, milestones))}]", "trainer.lr=5e-4",
            "energy_trainer.epochs=20", "energy_milestone_epochs=[10]", "trainer.resume=true"]


def student_args(data: Path, teacher: Path, run: Path, epochs: int, recipe: str = "cosine",
                 lr: float = 4e-4) -> list[str]:
    """``cosine``: Adam at ``lr``, cosine decay, no accumulation. ``v2``: v2's schedule
    (K = 2/4/8/16 from epochs 0/10/40/70 of 100, lr x0.5 at each) scaled to ``epochs``."""
    common = ["distill", "config=caloflow_student", f"teacher={teacher}", f"data.path={data}",
              f"run_dir={run}", "flow.hidden=[128,128]", f"trainer.epochs={epochs}",
              "distill.init=teacher"]
    if recipe == "cosine":
        return [*common, "milestone_epochs=[]", "trainer.schedule=cosine",
                "trainer.grad_accum=null", "trainer.warmup_steps=50", f"trainer.lr={lr:g}"]
    edges = sorted({max(1, round(e * epochs / 100)) for e in (10, 40, 70)})
    accum = [[0, 2]] + [[e, k] for e, k in zip(edges, (4, 8, 16))]
    acc = "[" + ",".join(f"[{a},{b}]" for a, b in accum) + "]"
    return [*common, f"milestone_epochs=[{','.join(map(str, edges))}]", "trainer.lr=2e-4",
            f"trainer.grad_accum={acc}"]


def _metrics(run: Path) -> dict[str, Any]:
    p = run / "metrics.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _commands(log: Path) -> list[str]:
    """The ``flowctl ...`` command lines a shell log or script recorded."""
    if not log.exists():
        return []
    return [m.group(0) for m in re.finditer(r"(?:python -m )?flowctl \S+ .*", log.read_text())]


def _history(run: Path) -> list[dict[str, Any]]:
    p = run / "metrics.jsonl"
    if not p.exists():
        return []
    keep = ("epoch", "step", "val_loss", "lr", "epoch_s")
    return [{k: r.get(k) for k in keep} for r in map(json.loads, p.read_text().splitlines())]


def _table(payload: dict[str, Any]) -> None:
    for role in payload["runs"]:
        ev = payload["runs"].get(role, {}).get("evaluate") or {}
        c = ev.get("classifier") or {}
        if c:
            print(f"{role}: AUC {c['unnormalized']['auc']:.3f} ± "
                  f"{c['unnormalized']['auc_err']:.3f}, normalized "
                  f"{c['normalized']['auc']:.3f} ± {c['normalized']['auc_err']:.3f}, mean "
                  f"separation power {ev['mean_separation_power']:.3f}")


def _student_settings(run: Path) -> dict[str, Any]:
    """The settings that tell the student runs apart, from their config.yaml."""
    import yaml

    p = run / "config.yaml"
    if not p.exists():
        return {}
    cfg = yaml.safe_load(p.read_text())
    tr = cfg.get("trainer") or {}
    return {"iaf_map": (cfg.get("flow") or {}).get("iaf_map", "forward"),
            "dropout": (cfg.get("flow") or {}).get("dropout"),
            "distill": cfg.get("distill"),
            "trainer": {k: tr.get(k) for k in ("lr", "schedule", "epochs", "grad_accum",
                                               "warmup_steps", "milestones")}}


def collect(root: Path, payload: dict[str, Any], diagnostics: bool = True) -> dict[str, Any]:
    walls = {p.name[2:]: int(p.read_text().split()[0]) for p in root.glob("t_*")}
    payload["recorded_unix_times"] = walls
    students = sorted(p for p in root.glob("student*") if (p / "metrics.json").exists())
    payload["runs"] = {"teacher": _metrics(root / "teacher"),
                       **{p.name: _metrics(p) for p in students}}
    payload["student_kl_history"] = {p.name: _history(p) for p in sorted(root.glob("student*"))
                                     if (p / "metrics.jsonl").exists()}
    payload["student_configs"] = {p.name: _student_settings(p) for p in students}
    if diagnostics and (root / "teacher").exists():
        from benchmarks.calo_student_diagnostics import init_kl, nonzero_fractions, same_z

        payload["init_kl"] = init_kl(root / "teacher")
        payload["same_z"] = {p.name: same_z(root / "teacher", p) for p in students
                             if (p / "checkpoints").exists()}
        payload["nonzero_voxel_fraction"] = nonzero_fractions(root / "teacher",
                                                              [root / "teacher", *students])
    payload["logged_commands"] = {p.name: _commands(p) for p in sorted(root.glob("*.sh"))}
    return payload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="outputs/calo-v2")
    ap.add_argument("--n", type=int, default=30000)
    ap.add_argument("--particle", choices=("eplus", "gamma", "piplus"), default="eplus")
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--teacher-milestones", type=int, nargs="+", default=[6])
    ap.add_argument("--student-epochs", type=int, default=10)
    ap.add_argument("--recipe", choices=("cosine", "v2"), default="cosine")
    ap.add_argument("--student-lr", type=float, default=4e-4)
    ap.add_argument("--student-run", default="student", help="the student's folder in --out")
    ap.add_argument("--collect", default=None, help="only gather an existing chain's results")
    args = ap.parse_args(argv)
    import torch

    payload: dict[str, Any] = {
        "benchmark": "calo_student", "machine": machine_info(torch.device("cpu"), {}),
        "load_average": load_average(),
        "command": "python benchmarks/calo_student.py "
        + " ".join(argv if argv is not None else sys.argv[1:])}
    path = results_path("calo_student")
    if args.collect:
        save_results(path, collect(Path(args.collect), payload))
        _table(payload)
        print(f"results: {path}")
        return 0
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    log = root / "chain.log"
    data = root / "data" / f"{args.particle}.h5"
    t0 = time.perf_counter()
    if not data.exists():
        import subprocess

        subprocess.run([sys.executable, "-m", "flowctl.data.synth", "--out", str(data.parent),
                        "--n", str(args.n), "--particles", args.particle], check=True, cwd=REPO)
    steps = [("teacher", teacher_args(data, root / "teacher", args.teacher_epochs,
                                      args.teacher_milestones)),
             ("teacher_eval", ["evaluate", f"run={root / 'teacher'}", *EVAL]),
             ("student", student_args(data, root / "teacher", root / args.student_run,
                                      args.student_epochs, args.recipe, args.student_lr)),
             ("student_eval", ["evaluate", f"run={root / args.student_run}", *EVAL])]
    payload["commands"] = {}
    for name, cmd in steps:
        wall = flowctl(cmd, log)
        payload["commands"][name] = {"command": "flowctl " + " ".join(cmd),
                                     "wall_s": round(wall, 1)}
        print(f"[{wall:8.1f} s] {name}", flush=True)
    payload["total_wall_s"] = round(time.perf_counter() - t0, 1)
    save_results(path, collect(root, payload))
    _table(payload)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
