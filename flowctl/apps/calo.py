"""CaloFlow: calorimeter showers with a two-flow model (Krause & Shih, arXiv:2106.05285) and
an IAF student distilled from it (CaloFlow v2, arXiv:2110.11377). Recipes and settings:
../shared/reference/caloflow.md §3–4 (cited as "ref §x" below).

Config keys (see configs/caloflow_*.yaml):

* ``stage``: what ``train`` fits: ``energy`` (Flow I only), ``teacher`` (Flow I, unless
  ``energy_run`` points to one, then Flow II) or ``student`` (distillation; same as
  ``distill``).
* ``data``: ``path`` (CaloGAN or CaloChallenge HDF5), ``format``, ``particle``, ``split``
  (CaloFlow's 70/30 train/test, seeded), ``test_path`` (a separate test file instead),
  ``max_showers``, ``e_min``/``e_max`` (GeV, E_inc range for sampling).
* ``energy_flow`` / ``flow``: :func:`flowctl.flows.build` specs of Flow I and Flow II;
  ``flow.permutation: within_layers`` gives CaloFlow's alternating within-layer reversal and
  random permutation (ref §3.3).
* ``trainer`` / ``energy_trainer`` (its overrides for Flow I) and ``milestone_epochs`` /
  ``energy_milestone_epochs``: the step schedule in epochs (converted to optimizer steps).
* ``preprocessing``: ``noise_mev`` (CaloFlow: U[0, 1 keV)), ``threshold_mev`` (CaloFlow: 10 keV;
  generated voxels below it are zeroed, and ``evaluate`` histograms both sets with it).
* ``teacher`` (a teacher run for ``distill``), ``distill`` (β, which terms, z-part contexts),
  ``student`` (student settings used by ``distill run=TEACHER``).
* ``n`` and ``sample`` (batch size) for ``sample``; ``eval`` and ``classifier`` for
  ``evaluate`` / ``classify``; ``truth`` / ``generated`` files for ``classify``.

Run layout: Flow II (or the student) in ``RUN/checkpoints``; Flow I in
``RUN/energy/checkpoints`` (or ``RUN/checkpoints`` for an ``energy`` run); showers in
``RUN/samples.h5`` (CaloGAN format).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowctl.apps.common import (
    UserError,
    build_flow,
    find_checkpoint,
    is_main_process,
    load_weights,
    read_config,
    update_metrics_json,
    write_config,
)
from flowctl.data.calo import (
    CALOGAN_LAYERS,
    Showers,
    add_noise,
    energy_context,
    energy_features,
    read_calogan,
    read_showers,
    shower_context,
    split_showers,
    voxel_features,
    voxels_from_features,
    write_calogan,
)
from flowctl.data.table import DataError

__all__ = ["COMMANDS", "classify", "distill", "evaluate", "load_data", "sample", "train"]

STAGES = ("energy", "teacher", "student")
#: Flow keys a student may set differently from its teacher (the rest is copied).
STUDENT_KEYS = ("hidden", "dropout", "residual", "activation")


# --------------------------------------------------------------------------- data


def load_data(data_cfg: dict[str, Any]) -> tuple[Showers, Showers]:
    """(train, test) showers from ``data.path`` (split 70/30) or ``data.test_path``."""
    path = data_cfg.get("path")
    if not path:
        raise UserError("data.path is required: pass data.path=FILE (a CaloGAN or "
                        "CaloChallenge HDF5 file; `make data` writes data/calo/*.h5)")
    if not Path(path).exists():
        raise UserError(f"{path}: no such file; run `make data` for the synthetic showers or "
                        "pass data.path=FILE")
    fmt = data_cfg.get("format", "auto")
    sizes = data_cfg.get("layer_sizes")
    mx = data_cfg.get("max_showers")
    s = read_showers(path, fmt, sizes)
    test_path = data_cfg.get("test_path")
    if test_path:
        train, test = s, read_showers(test_path, fmt, sizes)
    else:
        train, test = split_showers(s, tuple(data_cfg.get("split") or (0.7, 0.3)),
                                    seed=int(data_cfg.get("split_seed", 0)))
    if mx:
        train = train.subset(slice(0, int(mx)))
        test = test.subset(slice(0, max(2, int(mx) * len(test) // max(len(s), 1) or 2)))
    if train.voxels.shape[1] != test.voxels.shape[1]:
        raise DataError(f"{test_path}: {test.voxels.shape[1]} voxels, but {path} has "
                        f"{train.voxels.shape[1]}")
    return train, test



@dataclass
class Prepared:
    """CaloFlow inputs of a set of showers (float32)."""

    u: np.ndarray       # Flow I input [N, 3] in [0, 1]
    e_ctx: np.ndarray   # Flow I context [N, 1]
    x: np.ndarray       # Flow II input [N, V] in [0, 1] (layer-normalised voxels)
    ctx: np.ndarray     # Flow II context [N, 1 + L]


def prepare(s: Showers, noise_mev: float, seed: int) -> Prepared:
    """Noise U[0, noise) on every voxel, then the layer energies and features (ref §3.1)."""
    rng = np.random.default_rng(seed)
    v = add_noise(s.voxels, rng, noise_mev)
    e = np.stack([v[:, sl].sum(1) for sl in s.layer_slices], 1)
    f32 = np.float32
    u = energy_features(e, s.energy) if e.shape[1] == 3 else np.zeros((len(s), 3))
    return Prepared(u.astype(f32), energy_context(s.energy).astype(f32),
                    voxel_features(v, s.layer_slices).astype(f32),
                    shower_context(s.energy, e).astype(f32))


# --------------------------------------------------------------------------- flows


def within_layer_permutations(layer_sizes: list[int], transforms: int,
                              seed: int) -> list[list[int]]:
    """CaloFlow's permutations between MADE blocks (ref §3.3): alternately reverse the order
    within each calorimeter layer and shuffle within each layer (seeded); voxels never cross
    layers. ``transforms - 1`` index lists."""
    edges = np.cumsum([0, *layer_sizes])
    gen = np.random.default_rng(seed)
    out = []
    for j in range(transforms - 1):
        perm = []
        for a, b in itertools.pairwise(edges):
            block = np.arange(a, b)
            perm += list(block[::-1] if j % 2 == 0 else gen.permutation(block))
        out.append([int(i) for i in perm])
    return out


def expand_spec(spec: dict[str, Any], layer_sizes: list[int] | None = None) -> dict[str, Any]:
    """A flow spec for :func:`flowctl.flows.build`: ``permutation: within_layers`` expanded."""
    spec = dict(spec)
    if spec.get("permutation") == "within_layers":
        sizes = layer_sizes or [int(np.prod(s)) for s in CALOGAN_LAYERS]
        if sum(sizes) != int(spec["features"]):
            raise UserError(f"flow.features={spec['features']} but the layers have "
                            f"{sum(sizes)} voxels")
        spec["permutation"] = within_layer_permutations(sizes, int(spec.get("transforms", 1)),
                                                        int(spec.get("seed", 0)))
    return spec


def _build(spec: dict[str, Any], layer_sizes: list[int] | None = None) -> torch.nn.Module:
    return build_flow(expand_spec(spec, layer_sizes))


def _load(run_dir: Path, spec: dict[str, Any], layer_sizes: list[int] | None = None
          ) -> torch.nn.Module:
    """Rebuild a flow and load ``run_dir/checkpoints/best.pt`` (or last.pt)."""
    return load_weights(_build(spec, layer_sizes), run_dir)


def _layer_sizes(cfg: dict[str, Any]) -> list[int] | None:
    sizes = (cfg.get("data") or {}).get("layer_sizes")
    return [int(s) for s in sizes] if sizes else None


def energy_dir(cfg: dict[str, Any], run_dir: Path) -> Path:
    """Folder with Flow I's checkpoints for this run."""
    if cfg.get("stage") == "energy":
        return run_dir
    er = cfg.get("energy_run")
    if not er:
        return run_dir / "energy"
    p = Path(er)
    if (p / "config.yaml").exists() and read_config(p).get("stage") not in ("energy", None):
        return p / "energy"
    return p


def _load_energy(cfg: dict[str, Any], run_dir: Path) -> torch.nn.Module:
    d = energy_dir(cfg, run_dir)
    if find_checkpoint(d) is None:
        raise UserError(f"no energy flow (Flow I) in {d}: train it with `flowctl train "
                        "config=caloflow_energy` and pass energy_run=RUN, or train a teacher")
    return _load(d, cfg["energy_flow"])


def _steps_per_epoch(n: int, batch: int) -> int:
    return max(1, math.ceil(n / batch))


def _trainer_cfg(base: dict[str, Any], over: dict[str, Any] | None,
                 milestone_epochs: list[int] | None, n_train: int) -> dict[str, Any]:
    tr = {**base, **(over or {})}
    if milestone_epochs:
        spe = _steps_per_epoch(n_train, int(tr.get("batch_size", 256)))
        tr["schedule"] = "step"
        tr["milestones"] = [int(e) * spe for e in milestone_epochs]
    return tr


def _nll(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return -model.log_prob(batch[0], batch[1]).mean()


def _fit(flow: torch.nn.Module, train: tuple[np.ndarray, np.ndarray],
         val: tuple[np.ndarray, np.ndarray], tr: dict[str, Any], out: Path,
         cfg: dict[str, Any]) -> dict[str, Any]:
    from torch.utils.data import TensorDataset

    from flowctl.training import seed_everything
    from flowctl.training import train as fit

    seed_everything(int(tr.get("seed", 0)))
    ds = TensorDataset(*(torch.from_numpy(a) for a in train))
    vs = TensorDataset(*(torch.from_numpy(a) for a in val))
    return fit(flow, _nll, ds, vs, tr, out, run_config=cfg)


def _loss_plot(run_dir: Path) -> None:
    from flowctl.apps.common import read_metrics_jsonl

    recs = read_metrics_jsonl(run_dir)
    if recs and is_main_process():
        from flowctl.plots.density import loss_curve, save

        save(loss_curve(recs), run_dir / "plots" / "loss.png")


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------- train


def train(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Fit Flow I and/or Flow II (stage energy | teacher), or distil a student (stage student)."""
    stage = cfg.get("stage", "teacher")
    if stage not in STAGES:
        raise UserError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if stage == "student":
        return distill(cfg, run_dir)
    t0 = time.perf_counter()
    train_s, test_s = load_data(cfg["data"])
    pre = cfg.get("preprocessing") or {}
    noise = float(pre.get("noise_mev", 1e-3))
    seed = int(cfg.get("seed", 0))
    ptr, pte = prepare(train_s, noise, seed), prepare(test_s, noise, seed + 1)
    out: dict[str, Any] = {"command": "train", "stage": stage, "data": train_s.source,
                           "n_train": len(train_s), "n_test": len(test_s)}
    base = dict(cfg["trainer"])
    if len(train_s.layer_sizes) != 3:
        raise UserError(f"the energy flow needs 3 calorimeter layers; {train_s.source} has "
                        f"{len(train_s.layer_sizes)} (set data.layer_sizes)")

    edir = energy_dir(cfg, run_dir)
    own_energy = stage == "energy" or not cfg.get("energy_run")
    if own_energy:
        espec = dict(cfg["energy_flow"])
        if find_checkpoint(edir) is None or not base.get("resume", False):
            flow1 = _build(espec)
            tr1 = _trainer_cfg(base, cfg.get("energy_trainer"),
                               cfg.get("energy_milestone_epochs"), len(train_s))
            s1 = _fit(flow1, (ptr.u, ptr.e_ctx), (pte.u, pte.e_ctx), tr1, edir, cfg)
            _loss_plot(edir)
            out["energy"] = {"best_val_nll": s1.get("best_val_loss"),
                             "best_epoch": s1.get("best_epoch"), "wall_s": s1.get("wall_s"),
                             "parameters": _params(flow1)}
    else:
        if find_checkpoint(edir) is None:
            raise UserError(f"energy_run={cfg['energy_run']}: no Flow I checkpoint in {edir}")
        cfg["energy_flow"] = read_config(Path(cfg["energy_run"])).get("energy_flow",
                                                                      cfg["energy_flow"])
        cfg["energy_run"] = str(Path(cfg["energy_run"]).resolve())
        write_config(run_dir, cfg)
    if stage == "teacher":
        spec = dict(cfg["flow"])
        d = ptr.x.shape[1]
        if spec.get("features") is None:
            spec["features"] = d
        if int(spec["features"]) != d or int(spec.get("context", 0)) != ptr.ctx.shape[1]:
            raise UserError(f"flow.features={spec['features']}, flow.context="
                            f"{spec.get('context')} but the data has {d} voxels and "
                            f"{ptr.ctx.shape[1]} context variables")
        cfg["flow"] = spec
        write_config(run_dir, cfg)
        flow2 = _build(spec, train_s.layer_sizes)
        tr2 = _trainer_cfg(base, None, cfg.get("milestone_epochs"), len(train_s))
        s2 = _fit(flow2, (ptr.x, ptr.ctx), (pte.x, pte.ctx), tr2, run_dir, cfg)
        _loss_plot(run_dir)
        out["shower"] = {"best_val_nll": s2.get("best_val_loss"),
                         "best_epoch": s2.get("best_epoch"), "wall_s": s2.get("wall_s"),
                         "parameters": _params(flow2), "epochs": s2.get("epochs")}
    out["train_wall_s"] = round(time.perf_counter() - t0, 2)
    update_metrics_json(run_dir, {"train": out})
    if is_main_process():
        parts = [f"{k}: best val NLL {v['best_val_nll']:.4g} at epoch {v['best_epoch']}, "
                 f"{v['parameters']} parameters" for k, v in out.items()
                 if k in ("energy", "shower") and v.get("best_val_nll") is not None]
        print(f"train ({stage}): {train_s.source}, {len(train_s)} showers; "
              + "; ".join(parts) + f"; {out['train_wall_s']:.1f} s")
        print(f"run directory: {run_dir}")
    return out


# --------------------------------------------------------------------------- sample


def _device(cfg: dict[str, Any]) -> torch.device:
    from flowctl.training import resolve_device

    name = (cfg.get("sample") or {}).get("device") or "cpu"
    try:
        return resolve_device(name)
    except Exception as exc:  # noqa: BLE001 - TrainingError
        raise UserError(str(exc)) from None


def _energy_to_context(flow1: torch.nn.Module, e_inc: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """E_inc [n] GeV -> (layer energies [n, 3] MeV, Flow II context [n, 4])."""
    ctx1 = torch.log10(e_inc / 10.0)[:, None]
    u = flow1.sample(len(e_inc), ctx1).clamp(0.0, 1.0)
    tot = u[:, 0] * e_inc * 1000.0
    e0 = u[:, 1] * tot
    e1 = u[:, 2] * (tot - e0)
    e = torch.stack([e0, e1, tot - e0 - e1], 1).clamp_min(0.0)
    return e, torch.cat([ctx1, torch.log10(e / 1000.0 + 1e-6)], 1)


def _threshold(cfg: dict[str, Any]) -> float:
    """Voxel threshold in MeV (``preprocessing.threshold_mev``; CaloFlow's 10 keV)."""
    raw = (cfg.get("preprocessing") or {}).get("threshold_mev", 1e-2)
    try:
        thr = float(raw)
    except (TypeError, ValueError):
        thr = float("nan")
    if not np.isfinite(thr) or thr < 0:
        raise UserError(f"preprocessing.threshold_mev must be a number >= 0 (MeV), got {raw!r}")
    return thr


def generate(cfg: dict[str, Any], run_dir: Path, n: int, batch: int, seed: int
             ) -> tuple[Showers, dict[str, float]]:
    """Chain Flow I -> Flow II (teacher or student) for ``n`` showers (ref §3.3 sampling)."""
    dev = _device(cfg)
    flow1 = _load_energy(cfg, run_dir).to(dev)
    flow2 = _load(run_dir, cfg["flow"], _layer_sizes(cfg)).to(dev)
    sizes = _layer_sizes(cfg) or [int(np.prod(s)) for s in CALOGAN_LAYERS]
    edges = np.cumsum([0, *sizes])
    slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]
    d = cfg.get("data") or {}
    lo, hi = float(d.get("e_min", 1.0)), float(d.get("e_max", 100.0))
    thr = _threshold(cfg)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)
    energies, voxels = [], []
    t_flow2 = 0.0
    n_bad = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, n, batch):
            b = min(batch, n - i)
            e_inc = (lo + (hi - lo) * torch.rand(b, generator=gen, dtype=torch.float64)).to(dev)
            e_layers, ctx = _energy_to_context(flow1, e_inc.float())
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            x = flow2.sample(b, ctx)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t_flow2 += time.perf_counter() - t1
            x = x.double().cpu().numpy()
            bad = ~np.isfinite(x).all(1)
            n_bad += int(bad.sum())
            vox = voxels_from_features(x[~bad], e_layers.double().cpu().numpy()[~bad], slices,
                                       thr)
            voxels.append(vox)
            energies.append(e_inc.cpu().numpy()[~bad])
    total = time.perf_counter() - t0
    shapes = CALOGAN_LAYERS if sizes == [288, 144, 72] else tuple((s,) for s in sizes)
    s = Showers(np.concatenate(energies), np.concatenate(voxels), shapes, None, "generated")
    timing = {"seconds": round(total, 3), "ms_per_shower": round(1000 * total / max(n, 1), 4),
              "flow2_ms_per_shower": round(1000 * t_flow2 / max(n, 1), 4), "batch": batch,
              "n_nonfinite_dropped": n_bad, "device": str(dev)}
    return s, timing


def sample(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Write ``n`` generated showers to ``RUN/samples.h5`` (CaloGAN format) and time it."""
    n = int(cfg.get("n", 10000))
    if n <= 0:
        raise UserError(f"n must be a positive integer, got {n}")
    batch = int((cfg.get("sample") or {}).get("batch", 10000))
    if batch <= 0:
        raise UserError(f"sample.batch must be positive, got {batch}")
    seed = int(cfg.get("seed", 0))
    s, timing = generate(cfg, run_dir, n, batch, seed)
    path = run_dir / "samples.h5"
    if is_main_process():
        if tuple(s.layer_shapes) == CALOGAN_LAYERS:
            write_calogan(path, s, attrs={"generator": f"flowctl {cfg.get('stage')}",
                                          "seed": seed})
        else:
            _write_calochallenge(path, s)
    out = {"command": "sample", "n": len(s), "file": str(path), "model": cfg.get("stage"),
           **timing}
    update_metrics_json(run_dir, {"sample": out})
    if is_main_process():
        print(f"sample: {len(s)} showers in {timing['seconds']:.2f} s "
              f"({timing['ms_per_shower']:.3f} ms per shower at batch {batch}; shower flow "
              f"{timing['flow2_ms_per_shower']:.3f} ms) -> {path}"
              + (f"; dropped {timing['n_nonfinite_dropped']} non-finite" if
                 timing["n_nonfinite_dropped"] else ""))
    return out


def _write_calochallenge(path: Path, s: Showers) -> None:
    import h5py

    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("incident_energies", data=(s.energy * 1000.0)[:, None])
        f.create_dataset("showers", data=s.voxels, compression="gzip", compression_opts=1)
    tmp.replace(path)


# --------------------------------------------------------------------------- evaluate / classify


def _classifier_cfg(cfg: dict[str, Any]):
    from flowctl.metrics.classifier import ClassifierConfig

    c = dict(cfg.get("classifier") or {})
    c.pop("variants", None)
    try:
        return ClassifierConfig.from_dict(c)
    except (ValueError, TypeError) as exc:
        raise UserError(f"classifier config: {exc}") from None


def _auc_runs(cfg: dict[str, Any], truth: Showers, gen: Showers
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Classifier generated (label 0) vs truth (label 1) per variant; (numbers, results)."""
    from flowctl.metrics.calo import classifier_inputs
    from flowctl.metrics.classifier import train_classifier

    ccfg = _classifier_cfg(cfg)
    variants = (cfg.get("classifier") or {}).get("variants") or ["unnormalized", "normalized"]
    thr = _threshold(cfg)
    nums, results = {}, {}
    for var in variants:
        if var not in ("unnormalized", "normalized"):
            raise UserError(f"classifier.variants: unknown {var!r} "
                            "(unnormalized | normalized)")
        norm = var == "normalized"
        xg = classifier_inputs(gen.energy, gen.voxels, gen.layer_shapes, norm, thr)
        xt = classifier_inputs(truth.energy, truth.voxels, truth.layer_shapes, norm, thr)
        try:
            r = train_classifier(xg, xt, ccfg)
        except ValueError as exc:
            raise UserError(f"classifier: {exc}") from None
        nums[var] = r.summary()
        results[var] = (r, xg)
    return nums, results


def _truth_showers(cfg: dict[str, Any], n: int | None) -> Showers:
    _, test = load_data(cfg["data"])
    return test.subset(slice(0, n)) if n else test


def evaluate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Shower plots, separation powers and the classifier AUC, generated vs truth (test)."""
    from flowctl.metrics.calo import separation_powers, shower_features
    from flowctl.plots import calo as P

    ev = dict(cfg.get("eval") or {})
    path = run_dir / "samples.h5"
    if not path.exists():
        sample({**cfg, "n": int(ev.get("n_samples", cfg.get("n", 10000)))}, run_dir)
    gen = read_calogan(path) if (run_dir / "samples.h5").exists() else None
    if gen is None or len(gen) < 10:
        raise UserError(f"{path}: fewer than 10 generated showers; sample more (n=...)")
    truth = _truth_showers(cfg, ev.get("n_truth"))
    thr = _threshold(cfg)
    ft = shower_features(truth.energy, truth.voxels, truth.layer_shapes, threshold_mev=thr)
    fg = shower_features(gen.energy, gen.voxels, gen.layer_shapes, threshold_mev=thr)
    sep = separation_powers(ft, fg, int(ev.get("bins", 50)))
    out: dict[str, Any] = {"command": "evaluate", "n_generated": len(gen),
                           "n_truth": len(truth), "separation_power": sep,
                           "mean_separation_power": float(np.mean(list(sep.values())))}
    plots = []
    if ev.get("plots", True) and is_main_process():
        plots.append(str(P.save(P.average_showers({"truth": truth.voxels,
                                                   "generated": gen.voxels},
                                                  truth.layer_shapes),
                                run_dir / "plots" / "average_shower.png")))
        plots.append(str(P.save(P.feature_histograms(ft, fg, sep, int(ev.get("bins", 50))),
                                run_dir / "plots" / "features.png")))
    if ev.get("classifier", True):
        nums, results = _auc_runs(cfg, truth, gen)
        out["classifier"] = nums
        if is_main_process() and plots:
            from flowctl.metrics.classifier import roc_curve

            curves = {k: (*roc_curve(r.test_labels, r.test_probs), r.auc)
                      for k, (r, _) in results.items()}
            plots.append(str(P.save(P.roc_figure(curves), run_dir / "plots" / "roc.png")))
    out["plots"] = plots
    update_metrics_json(run_dir, {"evaluate": out})
    if is_main_process():
        worst = sorted(sep.items(), key=lambda kv: -kv[1])[:3]
        print(f"evaluate: {len(gen)} generated vs {len(truth)} truth showers; mean separation "
              f"power {out['mean_separation_power']:.4f} (worst: "
              + ", ".join(f"{k} {v:.3f}" for k, v in worst) + ")")
        for k, v in (out.get("classifier") or {}).items():
            print(f"classifier ({k}): AUC {v['auc']:.4f} ± {v['auc_err']:.4f}, "
                  f"JSD {v['jsd']:.4f}, best epoch {v['best_epoch']}")
        if plots:
            print(f"plots: {run_dir / 'plots'}")
    return out


def classify(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The CaloFlow classifier on ``truth=FILE`` vs ``generated=FILE`` (defaults: the run's
    test split and samples.h5); writes the ROC plot and the weights w = D/(1-D) of the
    generated showers (``classifier_weights.h5``)."""
    import h5py

    from flowctl.metrics.classifier import density_ratio, roc_curve
    from flowctl.plots import calo as P

    d = cfg.get("data") or {}
    fmt, sizes = d.get("format", "auto"), d.get("layer_sizes")
    gpath = cfg.get("generated") or run_dir / "samples.h5"
    if not Path(gpath).exists():
        raise UserError(f"generated={gpath}: no such file (run `flowctl sample` first or pass "
                        "generated=FILE)")
    gen = read_showers(gpath, fmt, sizes)
    truth = read_showers(cfg["truth"], fmt, sizes) if cfg.get("truth") else \
        _truth_showers(cfg, None)
    if gen.voxels.shape[1] != truth.voxels.shape[1]:
        raise UserError(f"{gpath} has {gen.voxels.shape[1]} voxels, the truth "
                        f"{truth.voxels.shape[1]}")
    nums, results = _auc_runs(cfg, truth, gen)
    out: dict[str, Any] = {"command": "classify", "truth": truth.source, "generated": str(gpath),
                           "n_truth": len(truth), "n_generated": len(gen), "classifier": nums}
    if is_main_process():
        wpath = run_dir / "classifier_weights.h5"
        with h5py.File(wpath, "w") as f:
            for k, (r, xg) in results.items():
                f.create_dataset(k, data=density_ratio(r.predict(xg)))
        out["weights"] = str(wpath)
        curves = {k: (*roc_curve(r.test_labels, r.test_probs), r.auc)
                  for k, (r, _) in results.items()}
        out["roc_plot"] = str(P.save(P.roc_figure(curves), run_dir / "plots" / "roc.png"))
    update_metrics_json(run_dir, {"classify": out})
    if is_main_process():
        for k, v in nums.items():
            print(f"classify ({k}): AUC {v['auc']:.4f} ± {v['auc_err']:.4f}, JSD "
                  f"{v['jsd']:.4f}, best epoch {v['best_epoch']} of {v['epochs']}")
        print(f"weights w = D/(1-D) of the generated showers: {out.get('weights')}")
    return out


# --------------------------------------------------------------------------- distill


def _student_setup(cfg: dict[str, Any], run_dir: Path) -> tuple[dict[str, Any], Path, Path]:
    """(student config, teacher run, output folder) for the two ways distill is called."""
    if cfg.get("stage") == "student":
        if not cfg.get("teacher"):
            raise UserError("distill needs the teacher run: pass teacher=RUN (a run of "
                            "config=caloflow_teacher)")
        return copy.deepcopy(cfg), Path(cfg["teacher"]), run_dir
    # `flowctl distill run=TEACHER`: the student goes to TEACHER/student
    scfg = copy.deepcopy(cfg)
    st = dict(cfg.get("student") or {})
    scfg["stage"] = "student"
    scfg["teacher"] = str(run_dir)
    scfg["flow"] = {"kind": "iaf", **(st.get("flow") or {})}
    scfg["trainer"] = {**cfg["trainer"], **(st.get("trainer") or {}), "resume": False}
    scfg["milestone_epochs"] = st.get("milestone_epochs")
    scfg["distill"] = {**(cfg.get("distill") or {}), **(st.get("distill") or {})}
    return scfg, run_dir, run_dir / "student"


def _context_sampler(flow1: torch.nn.Module, lo: float, hi: float):
    def draw(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        with torch.no_grad():
            p = next(flow1.parameters())
            if p.device != device:
                flow1.to(device)
            e_inc = lo + (hi - lo) * torch.rand(n, device=device)
            return _energy_to_context(flow1, e_inc)[1].to(dtype)
    return draw


def distill(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Probability density distillation of an IAF student from a teacher run (ref §4)."""
    from flowctl.training.distill import (
        DistillLoss,
        DistillTerms,
        check_compatible,
        copy_permutations,
    )

    t0 = time.perf_counter()
    scfg, tdir, out_dir = _student_setup(cfg, run_dir)
    if not (tdir / "config.yaml").exists() or find_checkpoint(tdir) is None:
        raise UserError(f"teacher={tdir} is not a trained run (no config.yaml or checkpoint)")
    tcfg = read_config(tdir)
    if tcfg.get("stage") != "teacher" or tcfg.get("app") != "calo":
        raise UserError(f"teacher={tdir} is a {tcfg.get('app')}/{tcfg.get('stage')} run; "
                        "distill needs a calo teacher run (config=caloflow_teacher)")
    sizes = _layer_sizes(tcfg)
    teacher = _load(tdir, tcfg["flow"], sizes)
    flow1 = _load_energy(tcfg, tdir)
    tspec = dict(tcfg["flow"])
    if tspec.get("kind") != "maf":
        raise UserError(f"teacher={tdir} is a {tspec.get('kind')} flow; the teacher must be maf")
    # the student mirrors the teacher's layers; only its conditioner may differ
    over = {k: v for k, v in (scfg.get("flow") or {}).items()
            if k in STUDENT_KEYS and v is not None}
    sspec = {**tspec, **over, "kind": "iaf"}
    scfg["flow"] = sspec
    scfg["energy_flow"] = tcfg["energy_flow"]
    scfg["energy_run"] = str(energy_dir(tcfg, tdir).resolve())
    scfg["teacher"] = str(tdir.resolve())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_config(out_dir, scfg)
    student = _build(sspec, sizes)
    copy_permutations(teacher, student)
    try:
        check_compatible(teacher, student)
    except ValueError as exc:
        raise UserError(f"teacher and student: {exc}") from None

    train_s, test_s = load_data(scfg["data"])
    pre = scfg.get("preprocessing") or {}
    seed = int(scfg.get("seed", 0))
    noise = float(pre.get("noise_mev", 1e-3))
    ptr, pte = prepare(train_s, noise, seed), prepare(test_s, noise, seed + 1)
    dc = dict(scfg.get("distill") or {})
    d = scfg.get("data") or {}
    sampler = None
    if dc.get("z_context", "energy_flow") == "energy_flow":
        sampler = _context_sampler(flow1, float(d.get("e_min", 1.0)), float(d.get("e_max", 100.0)))
    loss = DistillLoss(teacher, beta=float(dc.get("beta", 0.5)), context_sampler=sampler,
                       terms=DistillTerms(intermediate=bool(dc.get("intermediate", True)),
                                          params=bool(dc.get("params", True))))
    tr = _trainer_cfg(dict(scfg["trainer"]), None, scfg.get("milestone_epochs"), len(train_s))
    from torch.utils.data import TensorDataset

    from flowctl.training import seed_everything
    from flowctl.training import train as fit

    seed_everything(int(tr.get("seed", 0)))
    summ = fit(student, loss, TensorDataset(torch.from_numpy(ptr.x), torch.from_numpy(ptr.ctx)),
               TensorDataset(torch.from_numpy(pte.x), torch.from_numpy(pte.ctx)), tr, out_dir,
               run_config=scfg)
    _loss_plot(out_dir)
    out = {"command": "distill", "teacher": str(tdir), "student_run": str(out_dir),
           "parameters": _params(student), "teacher_parameters": _params(teacher),
           "best_kl": summ.get("best_val_loss"), "best_epoch": summ.get("best_epoch"),
           "epochs": summ.get("epochs"), "last_terms": loss.last,
           "wall_s": round(time.perf_counter() - t0, 2)}
    update_metrics_json(out_dir, {"distill": out})
    if is_main_process():
        kl = out["best_kl"]
        print(f"distill: student ({out['parameters']} parameters) from {tdir}; best "
              f"KL(student||teacher) {kl:.4g} nats at epoch {out['best_epoch']}; "
              f"{out['wall_s']:.1f} s" if kl is not None else "distill: no finite KL")
        print(f"student run directory: {out_dir}")
    return out


COMMANDS = {"train": train, "sample": sample, "evaluate": evaluate, "distill": distill,
            "classify": classify}
