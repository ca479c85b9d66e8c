"""CaloFlow: calorimeter showers with a two-flow model (Krause & Shih, arXiv:2106.05285), an
IAF student distilled from it (CaloFlow v2, arXiv:2110.11377), CaloFlow for the CaloChallenge
DS1 (any number of layers, arXiv:2210.14245) and iCaloFlow's layer-by-layer model for DS2/DS3
(arXiv:2305.11934). Recipes and settings: ../shared/reference/caloflow.md (cited "ref §x").

Config keys (see configs/caloflow_*.yaml):

* ``stage``: what ``train`` fits: ``energy`` (Flow I only), ``teacher`` (Flow I, unless
  ``energy_run`` points to one, then the shower flow(s)) or ``student`` (same as ``distill``).
* ``model``: ``caloflow`` (one flow over all voxels, Flow II) or ``layerwise`` (iCaloFlow:
  ``flow_first`` for layer 0 and ``flow`` for every later layer given the previous one).
* ``data``: ``path`` (CaloGAN or CaloChallenge HDF5), ``format``, ``binning`` (a CaloChallenge
  binning XML, or ``ds1_photons`` | ``ds1_pions`` | ``ds2`` | ``ds3``), ``split`` (70/30,
  seeded), ``test_path``, ``max_showers``, ``e_sampling`` (``uniform`` in ``e_min``-``e_max``
  GeV, or ``training``: like the training set).
* ``energy_flow`` / ``flow`` (/ ``flow_first``): :func:`flowctl.flows.build` specs;
  ``features``/``context`` null are filled from the data.
* ``trainer`` / ``energy_trainer`` / ``first_trainer`` and ``*milestone_epochs``.
* ``preprocessing``: ``noise_mev``, ``threshold_mev`` (generated voxels below it are zeroed),
  ``u0_scale`` (Flow I's ``u0 = E_tot / (u0_scale E_inc)``), ``e_ref_gev`` (contexts use
  ``log10(E_inc / e_ref)``).
* ``teacher``, ``distill``, ``student``; ``n``, ``energies`` (a file whose incident energies
  to generate for) and ``sample``; ``eval`` and ``classifier``.

Run layout: shower flow (or student) in ``RUN/checkpoints``; iCaloFlow's first-layer flow in
``RUN/first/checkpoints``; Flow I in ``RUN/energy/checkpoints``; the binning in
``RUN/binning.xml``; showers in ``RUN/samples.h5`` (CaloGAN or CaloChallenge format).
"""

from __future__ import annotations

import copy
import itertools
import math
import shutil
import time
from collections.abc import Callable
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
from flowctl.calo.geometry import Geometry, GeometryError, load_binning
from flowctl.calo.preprocess import (
    Prepared,
    draw_energies,
    energy_table,
    expand_spec,
    prepare,
    within_layer_permutations,
)
from flowctl.calo.sampling import ShowerSampler
from flowctl.calo.sampling import energy_to_context as _energy_to_context
from flowctl.data.calo import (
    CALOGAN_LAYERS,
    Showers,
    read_showers,
    split_showers,
    voxels_from_features,
    write_calochallenge,
    write_calogan,
)
from flowctl.data.table import DataError

__all__ = ["COMMANDS", "Prepared", "ShowerSampler", "classify", "distill", "draw_energies",
           "energy_table", "evaluate", "expand_spec", "load_data", "prepare", "sample", "train",
           "validate", "within_layer_permutations"]

STAGES = ("energy", "teacher", "student")
MODELS = ("caloflow", "layerwise")
#: Flow keys a student may set differently from its teacher (the rest is copied).
STUDENT_KEYS = ("hidden", "dropout", "residual", "activation", "iaf_map")
CHALLENGE_VARIANTS = ("low_normed", "high", "low")
CALOGAN_VARIANTS = ("unnormalized", "normalized")


# --------------------------------------------------------------------------- validation


def _num(cfg: dict[str, Any], key: str, lo: float | None = None, strict: bool = False,
         hi: float | None = None, integer: bool = False, optional: bool = False) -> Any:
    """Value of dotted ``key`` in ``cfg``, checked: a finite number in range, else UserError."""
    cur: Any = cfg
    for part in key.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None and optional:
        return None
    ok = isinstance(cur, (int, float)) and not isinstance(cur, bool)
    if ok and integer:
        ok = float(cur).is_integer()
    if ok:
        v = float(cur)
        ok = math.isfinite(v) and (lo is None or (v > lo if strict else v >= lo)) \
            and (hi is None or v <= hi)
    if not ok:
        rng = []
        if lo is not None:
            rng.append(f"{'>' if strict else '>='} {lo:g}")
        if hi is not None:
            rng.append(f"<= {hi:g}")
        kind = "an integer" if integer else "a finite number"
        raise UserError(f"{key}={cur!r}: expected {kind}" + (f" {' and '.join(rng)}" if rng
                                                                else "")
                        + (" or null" if optional else ""))
    return int(cur) if integer else float(cur)


def _epochs_list(cfg: dict[str, Any], key: str) -> None:
    v = cfg.get(key)
    if v is None:
        return
    if not isinstance(v, list) or not all(isinstance(e, int) and not isinstance(e, bool)
                                          and e >= 1 for e in v):
        raise UserError(f"{key}={v!r}: expected a list of epochs (integers >= 1) or null")


def _check_trainer(tr: dict[str, Any], key: str) -> None:
    from flowctl.training import config as tc
    from flowctl.training.errors import TrainingError

    try:
        if hasattr(tc, "check_values"):
            tc.check_values(tr, prefix=key)
        tc.validate_config(tr)
    except (TrainingError, ValueError, TypeError) as exc:
        msg = str(exc)
        raise UserError(msg if key in msg else f"{key}: {msg}") from None


def validate(cfg: dict[str, Any]) -> None:
    """Check every numeric setting of a calo config before any work (issue 13): one
    :class:`UserError` line naming the key, the value and what was expected."""
    stage = cfg.get("stage", "teacher")
    if stage not in (*STAGES, "classifier"):
        raise UserError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    model = cfg.get("model", "caloflow")
    if model not in MODELS:
        raise UserError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    d = cfg.get("data") or {}
    split = d.get("split") or [0.7, 0.3]
    if not (isinstance(split, list) and len(split) == 2
            and all(isinstance(f, (int, float)) and 0 < f < 1 for f in split)
            and abs(sum(split) - 1.0) < 1e-6):
        raise UserError(f"data.split={split!r}: expected two fractions in (0, 1) summing to 1")
    _num(cfg, "data.max_showers", 2, integer=True, optional=True)
    e_min = _num(cfg, "data.e_min", 0.0, strict=True, optional=True)
    e_max = _num(cfg, "data.e_max", 0.0, strict=True, optional=True)
    if e_min is not None and e_max is not None and e_max <= e_min:
        raise UserError(f"data.e_max={e_max:g} must be above data.e_min={e_min:g} (GeV)")
    if d.get("e_sampling", "uniform") not in ("uniform", "training"):
        raise UserError(f"data.e_sampling={d.get('e_sampling')!r}: expected uniform or training")
    _num(cfg, "preprocessing.noise_mev", 0.0, optional=True)
    _num(cfg, "preprocessing.threshold_mev", 0.0, optional=True)
    _num(cfg, "preprocessing.u0_scale", 0.0, strict=True, optional=True)
    _num(cfg, "preprocessing.e_ref_gev", 0.0, strict=True, optional=True)
    _num(cfg, "n", 1, integer=True, optional=True)
    _num(cfg, "seed", integer=True, optional=True)
    _num(cfg, "sample.batch", 1, integer=True, optional=True)
    _num(cfg, "eval.n_samples", 10, integer=True, optional=True)
    _num(cfg, "eval.n_truth", 10, integer=True, optional=True)
    _num(cfg, "eval.bins", 2, integer=True, optional=True)
    _num(cfg, "eval.min_energy_mev", 0.0, optional=True)
    _num(cfg, "distill.beta", 0.0, hi=1.0, optional=True)
    init = (cfg.get("distill") or {}).get("init", "random")
    if init not in ("random", "teacher"):
        raise UserError(f"distill.init={init!r}: expected random (CaloFlow v2) or teacher "
                        "(start from the teacher's mirrored conditioners)")
    for key in ("milestone_epochs", "energy_milestone_epochs", "first_milestone_epochs"):
        _epochs_list(cfg, key)
    base = dict(cfg.get("trainer") or {})
    _check_trainer(base, "trainer")
    for key in ("energy_trainer", "first_trainer"):
        if cfg.get(key):
            _check_trainer({**base, **cfg[key]}, key)
    st = cfg.get("student") or {}
    if st.get("trainer"):
        _check_trainer({**base, **st["trainer"]}, "student.trainer")
    _classifier_cfg(cfg)
    variants = (cfg.get("classifier") or {}).get("variants")
    if variants is not None and (not isinstance(variants, list) or not variants or any(
            v not in (*CHALLENGE_VARIANTS, *CALOGAN_VARIANTS) for v in variants)):
        raise UserError(f"classifier.variants={variants!r}: expected a list from "
                        f"{', '.join((*CHALLENGE_VARIANTS, *CALOGAN_VARIANTS))}")


# --------------------------------------------------------------------------- data


def geometry(cfg: dict[str, Any], run_dir: Path | None = None) -> Geometry | None:
    """The run's binning (``RUN/binning.xml`` if present, else ``data.binning``), or None."""
    if run_dir is not None and (run_dir / "binning.xml").exists():
        src: Any = run_dir / "binning.xml"
    else:
        src = (cfg.get("data") or {}).get("binning")
    if not src:
        return None
    try:
        return load_binning(src)
    except GeometryError as exc:
        raise UserError(f"data.binning: {exc}") from None


def load_data(data_cfg: dict[str, Any], geo: Geometry | None = None
              ) -> tuple[Showers, Showers]:
    """(train, test) showers from ``data.path`` (split 70/30) or ``data.test_path``."""
    path = data_cfg.get("path")
    if not path:
        raise UserError("data.path is required: pass data.path=FILE (a CaloGAN or "
                        "CaloChallenge HDF5 file; `make data` writes data/calo/*.h5)")
    if not Path(path).exists():
        raise UserError(f"{path}: no such file; run `make data` for the synthetic showers or "
                        "pass data.path=FILE")
    fmt = data_cfg.get("format", "auto")
    sizes = geo.layer_sizes if geo is not None else data_cfg.get("layer_sizes")
    bsrc = geo.source if geo is not None else None
    mx = data_cfg.get("max_showers")
    s = read_showers(path, fmt, sizes, binning=bsrc)
    if geo is not None and tuple(s.layer_shapes) == CALOGAN_LAYERS:
        raise UserError(f"data.binning={data_cfg.get('binning')} is for CaloChallenge files; "
                        f"{path} is a CaloGAN file (set data.binning=null)")
    test_path = data_cfg.get("test_path")
    if test_path:
        train, test = s, read_showers(test_path, fmt, sizes, binning=bsrc)
    else:
        if len(s) < 4:
            raise UserError(f"{path}: {len(s)} shower(s); CaloFlow needs at least 4 to split "
                            f"them by data.split={list(data_cfg.get('split') or [0.7, 0.3])}")
        train, test = split_showers(s, tuple(data_cfg.get("split") or (0.7, 0.3)),
                                    seed=int(data_cfg.get("split_seed", 0)))
    if mx:
        train = train.subset(slice(0, int(mx)))
        test = test.subset(slice(0, max(2, int(mx) * len(test) // max(len(s), 1) or 2)))
    if train.voxels.shape[1] != test.voxels.shape[1]:
        raise DataError(f"{test_path}: {test.voxels.shape[1]} voxels, but {path} has "
                        f"{train.voxels.shape[1]}")
    if len(train) < 2 or len(test) < 1:
        raise UserError(f"{path}: {len(train)} training and {len(test)} test showers; "
                        "CaloFlow needs at least 2 and 1 (more data, or data.split/"
                        "data.max_showers)")
    return train, test


def _check_layers(s: Showers, geo: Geometry | None) -> None:
    """A layer empty in every training shower: the data and binning do not belong together."""
    el = s.layer_energies()
    empty = np.flatnonzero(~(el > 0).any(0))
    if len(empty):
        ids = [geo.layer_ids[i] for i in empty] if geo is not None else list(empty)
        raise UserError(f"{s.source}: layer(s) {ids} hold no energy in any of the {len(s)} "
                        "training showers; the shower flows cannot learn an empty layer "
                        "(wrong data.binning for this file?)")


def read_energies(path: str) -> np.ndarray:
    """Incident energies ``[N]`` GeV from a file (``energies=FILE``): a CaloChallenge file
    (``incident_energies`` MeV) or a CaloGAN file (``energy`` GeV)."""
    import h5py

    p = Path(path)
    if not p.exists():
        raise UserError(f"energies={path}: no such file")
    try:
        with h5py.File(p, "r") as f:
            if "incident_energies" in f:
                e = np.asarray(f["incident_energies"][()], np.float64).reshape(-1) / 1000.0
            elif "energy" in f:
                e = np.asarray(f["energy"][()], np.float64).reshape(-1)
            else:
                raise UserError(f"energies={path}: no key 'incident_energies' (MeV) or "
                                f"'energy' (GeV); the file has {', '.join(f.keys()) or 'none'}")
    except OSError as exc:
        raise UserError(f"energies={path}: cannot open as HDF5 ({exc})") from None
    if len(e) == 0 or not np.isfinite(e).all() or (e <= 0).any():
        raise UserError(f"energies={path}: incident energies must be finite and > 0 "
                        f"({len(e)} values)")
    return e


def _pre(cfg: dict[str, Any]) -> tuple[float, float, float]:
    """(noise MeV, u0 scale, E_ref GeV) from ``preprocessing``."""
    p = cfg.get("preprocessing") or {}
    return (float(p.get("noise_mev", 1e-3)), float(p.get("u0_scale") or 1.0),
            float(p.get("e_ref_gev") or 10.0))


# --------------------------------------------------------------------------- flows


def _build(spec: dict[str, Any], layer_sizes: list[int] | None = None) -> torch.nn.Module:
    return build_flow(expand_spec(spec, layer_sizes))


def _load(run_dir: Path, spec: dict[str, Any], layer_sizes: list[int] | None = None
          ) -> torch.nn.Module:
    """Rebuild a flow and load ``run_dir/checkpoints/best.pt`` (or last.pt)."""
    return load_weights(_build(spec, layer_sizes), run_dir)


def _layer_sizes(cfg: dict[str, Any], run_dir: Path | None = None) -> list[int] | None:
    geo = geometry(cfg, run_dir)
    if geo is not None:
        return geo.layer_sizes
    sizes = (cfg.get("data") or {}).get("layer_sizes")
    return [int(s) for s in sizes] if sizes else None


def _fill(spec: dict[str, Any], key: str, features: int, context: int) -> dict[str, Any]:
    """``features``/``context`` of a flow spec from the data (null -> filled; else checked)."""
    spec = dict(spec)
    for k, want in (("features", features), ("context", context)):
        if spec.get(k) is None:
            spec[k] = want
        elif int(spec[k]) != want:
            what = "inputs" if k == "features" else "context variables"
            raise UserError(f"{key}.{k}={spec[k]} but the data gives {want} {what} "
                            f"(set {key}.{k}=null to take it from the data)")
    return spec


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
         cfg: dict[str, Any], loss: Any = _nll) -> dict[str, Any]:
    from torch.utils.data import TensorDataset

    from flowctl.training import seed_everything
    from flowctl.training import train as fit

    seed_everything(int(tr.get("seed", 0)))
    ds = TensorDataset(*(torch.from_numpy(np.ascontiguousarray(a)) for a in train))
    vs = TensorDataset(*(torch.from_numpy(np.ascontiguousarray(a)) for a in val))
    summ = fit(flow, loss, ds, vs, tr, out, run_config=cfg)
    best = summ.get("best_val_loss")
    if best is None or not math.isfinite(float(best)):
        raise UserError(f"{out}: training ended without a finite validation loss "
                        f"(best {best}); lower trainer.lr or check the data")
    return summ


def _loss_plot(run_dir: Path) -> None:
    from flowctl.apps.common import read_metrics_jsonl

    recs = read_metrics_jsonl(run_dir)
    if recs and is_main_process():
        from flowctl.plots.density import loss_curve, save

        save(loss_curve(recs), run_dir / "plots" / "loss.png")


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _summary(s: dict[str, Any], flow: torch.nn.Module) -> dict[str, Any]:
    return {"best_val_nll": s.get("best_val_loss"), "best_epoch": s.get("best_epoch"),
            "wall_s": s.get("wall_s"), "parameters": _params(flow), "epochs": s.get("epochs")}


# --------------------------------------------------------------------------- layerwise data


def _layer_blocks(p: Prepared, sizes: list[int]) -> np.ndarray:
    """Normalised voxels ``[N, L, Vl]`` (layers of equal size)."""
    return p.x.reshape(len(p.x), len(sizes), sizes[0])


def _layerwise_inputs(p: Prepared, sizes: list[int]
                      ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((first-layer x, ctx), (later-layer rows x, ctx)) for iCaloFlow's two shower flows."""
    from flowctl.calo.layerwise import first_context, layer_rows

    x = _layer_blocks(p, sizes)
    le, ll = p.ctx[:, 0], p.ctx[:, 1:]
    first = (np.ascontiguousarray(x[:, 0]), first_context(le, ll).astype(np.float32))
    return first, layer_rows(x, le, ll)


def _check_layerwise(sizes: list[int], src: str) -> None:
    if len(set(sizes)) != 1 or len(sizes) < 2:
        raise UserError(f"model=layerwise needs >= 2 layers of equal size; {src} has layers "
                        f"of {sizes} voxels (use model=caloflow)")


# --------------------------------------------------------------------------- train


def _prepare_run(cfg: dict[str, Any], run_dir: Path
                 ) -> tuple[Showers, Showers, Prepared, Prepared, Geometry | None]:
    """Read the data, check it, prepare it; write the binning into the run."""
    d = cfg["data"]
    geo = geometry(cfg)
    train_s, test_s = load_data(d, geo)
    _check_layers(train_s, geo)
    noise, scale, e_ref = _pre(cfg)
    seed = int(cfg.get("seed", 0))
    ptr = prepare(train_s, noise, seed, scale, e_ref)
    pte = prepare(test_s, noise, seed + 1, scale, e_ref)
    if geo is not None and is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        if Path(geo.source).resolve() != (run_dir / "binning.xml").resolve():
            shutil.copyfile(geo.source, run_dir / ".binning.xml.tmp")
            (run_dir / ".binning.xml.tmp").replace(run_dir / "binning.xml")
    cfg["incident_energy"] = energy_table(train_s.energy)
    return train_s, test_s, ptr, pte, geo


def train(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Fit Flow I and/or the shower flow(s) (stage energy | teacher), or distil a student."""
    validate(cfg)
    stage = cfg.get("stage", "teacher")
    if stage == "student":
        return distill(cfg, run_dir)
    t0 = time.perf_counter()
    train_s, test_s, ptr, pte, geo = _prepare_run(cfg, run_dir)
    model = cfg.get("model", "caloflow")
    sizes = train_s.layer_sizes
    n_layers = len(sizes)
    out: dict[str, Any] = {"command": "train", "stage": stage, "model": model,
                           "data": train_s.source, "n_train": len(train_s),
                           "n_test": len(test_s), "n_layers": n_layers, "voxels": sum(sizes)}
    if geo is not None:
        out["binning"] = str(cfg["data"].get("binning"))
        out["dataset"] = geo.dataset
    out["u0_clipped"] = int((ptr.u[:, 0] >= 1.0).sum())
    base = dict(cfg["trainer"])
    n_tr = len(train_s)
    # Build every flow first: a bad spec fails before Flow I trains.
    own_energy = stage == "energy" or not cfg.get("energy_run")
    espec = _fill(dict(cfg["energy_flow"]), "energy_flow", n_layers, 1)
    cfg["energy_flow"] = espec
    flow1 = _build(espec) if own_energy else None
    shower_flows: list[tuple[str, dict[str, Any], Path, Any, Any, list[int] | None]] = []
    if stage == "teacher":
        if model == "caloflow":
            spec = _fill(dict(cfg["flow"]), "flow", ptr.x.shape[1], ptr.ctx.shape[1])
            cfg["flow"] = spec
            shower_flows.append(("shower", spec, run_dir, (ptr.x, ptr.ctx), (pte.x, pte.ctx),
                                 cfg.get("milestone_epochs")))
        else:
            _check_layerwise(sizes, train_s.source)
            ftr, rtr = _layerwise_inputs(ptr, sizes)
            fte, rte = _layerwise_inputs(pte, sizes)
            fspec = _fill(dict(cfg.get("flow_first") or cfg["flow"]), "flow_first", sizes[0],
                          ftr[1].shape[1])
            spec = _fill(dict(cfg["flow"]), "flow", sizes[0], rtr[1].shape[1])
            cfg["flow_first"], cfg["flow"] = fspec, spec
            shower_flows.append(("first", fspec, run_dir / "first", ftr, fte,
                                 cfg.get("first_milestone_epochs")))
            shower_flows.append(("layers", spec, run_dir, rtr, rte, cfg.get("milestone_epochs")))
    built = [_build(spec, sizes) for _, spec, *_ in shower_flows]
    write_config(run_dir, cfg)

    edir = energy_dir(cfg, run_dir)
    if own_energy:
        assert flow1 is not None
        if find_checkpoint(edir) is None or not base.get("resume", False):
            tr1 = _trainer_cfg(base, cfg.get("energy_trainer"),
                               cfg.get("energy_milestone_epochs"), n_tr)
            s1 = _fit(flow1, (ptr.u, ptr.e_ctx), (pte.u, pte.e_ctx), tr1, edir, cfg)
            _loss_plot(edir)
            out["energy"] = _summary(s1, flow1)
    else:
        if find_checkpoint(edir) is None:
            raise UserError(f"energy_run={cfg['energy_run']}: no Flow I checkpoint in {edir}")
        cfg["energy_flow"] = read_config(Path(cfg["energy_run"])).get("energy_flow",
                                                                      cfg["energy_flow"])
        cfg["energy_run"] = str(Path(cfg["energy_run"]).resolve())
        write_config(run_dir, cfg)
    for (name, _spec, folder, tr_data, te_data, milestones), flow in zip(shower_flows, built):
        over = cfg.get("first_trainer") if name == "first" else None
        tr = _trainer_cfg(base, over, milestones, len(tr_data[0]))
        s2 = _fit(flow, tr_data, te_data, tr, folder, cfg)
        _loss_plot(folder)
        out[name] = _summary(s2, flow)
    out["train_wall_s"] = round(time.perf_counter() - t0, 2)
    update_metrics_json(run_dir, {"train": out})
    if is_main_process():
        parts = [f"{k}: best val NLL {v['best_val_nll']:.4g} at epoch {v['best_epoch']}, "
                 f"{v['parameters']} parameters" for k, v in out.items()
                 if k in ("energy", "shower", "first", "layers")
                 and v.get("best_val_nll") is not None]
        print(f"train ({stage}, {model}): {train_s.source}, {len(train_s)} showers, "
              f"{n_layers} layers, {sum(sizes)} voxels; " + "; ".join(parts)
              + f"; {out['train_wall_s']:.1f} s")
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


def shower_sampler(cfg: dict[str, Any], run_dir: Path, dev: torch.device) -> ShowerSampler:
    """The run's shower flow(s) on ``dev`` (teacher or student run)."""
    sizes = _layer_sizes(cfg, run_dir) or [int(np.prod(s)) for s in CALOGAN_LAYERS]
    flow = _load(run_dir, cfg["flow"], sizes).to(dev)
    first = None
    if cfg.get("model", "caloflow") == "layerwise":
        first = _load(run_dir / "first", cfg["flow_first"], sizes).to(dev)
    return ShowerSampler(flow, sizes, first)


def generate(cfg: dict[str, Any], run_dir: Path, n: int, batch: int, seed: int,
             energies_gev: np.ndarray | None = None) -> tuple[Showers, dict[str, Any]]:
    """Chain Flow I -> shower flow(s) (teacher or student) for ``n`` showers (ref §3.3);
    incident energies from ``energies_gev`` or drawn as ``data.e_sampling`` says."""
    dev = _device(cfg)
    flow1 = _load_energy(cfg, run_dir).to(dev)
    sampler = shower_sampler(cfg, run_dir, dev)
    sizes = sampler.sizes
    edges = np.cumsum([0, *sizes])
    slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]
    _, scale, e_ref = _pre(cfg)
    thr = _threshold(cfg)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)
    if energies_gev is not None:
        e_all = torch.from_numpy(np.asarray(energies_gev, np.float64))
        n = len(e_all)
    else:
        e_all = draw_energies(cfg, n, gen)
    energies, voxels = [], []
    t_flow2 = 0.0
    n_bad = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, n, batch):
            e_inc = e_all[i:i + batch].to(dev)
            b = len(e_inc)
            e_layers, ctx = _energy_to_context(flow1, e_inc.float(), scale, e_ref)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            x = sampler.sample(ctx)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t_flow2 += time.perf_counter() - t1
            x = x.double().cpu().numpy().reshape(b, -1)
            bad = ~np.isfinite(x).all(1)
            n_bad += int(bad.sum())
            vox = voxels_from_features(x[~bad], e_layers.double().cpu().numpy()[~bad], slices,
                                       thr)
            voxels.append(vox)
            energies.append(e_inc.double().cpu().numpy()[~bad])
    total = time.perf_counter() - t0
    if n_bad == n:
        raise UserError(f"run {run_dir}: all {n} generated showers are non-finite; the model "
                        "is broken (retrain with a lower trainer.lr)")
    shapes = CALOGAN_LAYERS if sizes == [288, 144, 72] and geometry(cfg, run_dir) is None \
        else tuple((s,) for s in sizes)
    s = Showers(np.concatenate(energies), np.concatenate(voxels), shapes, None, "generated")
    timing = {"seconds": round(total, 3), "ms_per_shower": round(1000 * total / max(n, 1), 4),
              "flow2_ms_per_shower": round(1000 * t_flow2 / max(n, 1), 4), "batch": batch,
              "n_nonfinite_dropped": n_bad, "device": str(dev)}
    return s, timing


def sample(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Write ``n`` generated showers to ``RUN/samples.h5`` and time it: CaloGAN format for
    CaloGAN runs, the challenge's submission format (``incident_energies [N, 1]``,
    ``showers [N, V]``, MeV, float32) otherwise. ``energies=FILE``: one shower per incident
    energy of FILE (the challenge's way: generate for the test file's energies)."""
    validate(cfg)
    n = int(cfg.get("n") or 10000)
    batch = int((cfg.get("sample") or {}).get("batch", 10000))
    seed = int(cfg.get("seed", 0))
    e_file = cfg.get("energies")
    energies = read_energies(str(e_file)) if e_file else None
    s, timing = generate(cfg, run_dir, n, batch, seed, energies)
    path = run_dir / "samples.h5"
    fmt = "calogan" if tuple(s.layer_shapes) == CALOGAN_LAYERS else "calochallenge"
    if is_main_process():
        if fmt == "calogan":
            write_calogan(path, s, attrs={"generator": f"flowctl {cfg.get('stage')}",
                                          "seed": seed})
        else:
            write_calochallenge(path, s.energy * 1000.0, s.voxels, "float32",
                                attrs={"generator": f"flowctl {cfg.get('stage')}",
                                       "seed": seed})
    out = {"command": "sample", "n": len(s), "file": str(path), "format": fmt,
           "model": cfg.get("stage"), "energies": str(e_file) if e_file else None, **timing}
    update_metrics_json(run_dir, {"sample": out})
    if is_main_process():
        src = f" for the energies of {e_file}" if e_file else ""
        print(f"sample: {len(s)} showers{src} in {timing['seconds']:.2f} s "
              f"({timing['ms_per_shower']:.3f} ms per shower at batch {batch}; shower flow "
              f"{timing['flow2_ms_per_shower']:.3f} ms) -> {path} ({fmt} format)"
              + (f"; dropped {timing['n_nonfinite_dropped']} non-finite" if
                 timing["n_nonfinite_dropped"] else ""))
    return out


# --------------------------------------------------------------------------- evaluate / classify


def _classifier_cfg(cfg: dict[str, Any]):
    from flowctl.classifiers import ClassifierConfig

    c = dict(cfg.get("classifier") or {})
    c.pop("variants", None)
    try:
        cc = ClassifierConfig.from_dict(c)
    except (ValueError, TypeError) as exc:
        raise UserError(f"classifier config: {exc}") from None
    for key, val, ok in (("hidden", cc.hidden, all(isinstance(h, int) and h >= 1
                                                  for h in cc.hidden)),
                         ("lr", cc.lr, isinstance(cc.lr, (int, float)) and math.isfinite(cc.lr)
                          and cc.lr > 0),
                         ("epochs", cc.epochs, isinstance(cc.epochs, int) and cc.epochs >= 1),
                         ("batch_size", cc.batch_size, isinstance(cc.batch_size, int)
                          and cc.batch_size >= 1),
                         ("bootstrap", cc.bootstrap, isinstance(cc.bootstrap, int)
                          and cc.bootstrap >= 0),
                         ("dropout", cc.dropout, isinstance(cc.dropout, (int, float))
                          and 0 <= cc.dropout < 1)):
        if not ok:
            raise UserError(f"classifier.{key}={val!r} is out of range")
    return cc


def _auc_runs(cfg: dict[str, Any], truth: Showers, gen: Showers
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """CaloGAN classifier generated (label 0) vs truth (label 1) per variant."""
    from flowctl.metrics.calo import classifier_inputs

    variants = (cfg.get("classifier") or {}).get("variants") or list(CALOGAN_VARIANTS)
    thr = _threshold(cfg)
    for var in variants:
        if var not in CALOGAN_VARIANTS:
            raise UserError(f"classifier.variants: unknown {var!r} "
                            "(unnormalized | normalized)")

    def inputs(s: Showers, var: str) -> np.ndarray:
        return classifier_inputs(s.energy, s.voxels, s.layer_shapes, var == "normalized", thr)

    return _train_variants(cfg, variants, truth, gen, inputs)


def _train_variants(cfg: dict[str, Any], variants: list[str], truth: Showers, gen: Showers,
                    inputs: Callable[[Showers, str], np.ndarray]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """One classifier generated (label 0) vs truth (label 1) per variant, on ``inputs(s, var)``;
    returns ``({variant: summary}, {variant: (result, generated inputs)})``."""
    from flowctl.classifiers import train_classifier

    ccfg = _classifier_cfg(cfg)
    nums, results = {}, {}
    for var in variants:
        xg, xt = inputs(gen, var), inputs(truth, var)
        try:
            r = train_classifier(xg, xt, ccfg)
        except ValueError as exc:
            raise UserError(f"classifier: {exc}") from None
        nums[var] = r.summary()
        results[var] = (r, xg)
    return nums, results


def _challenge_inputs(geo: Geometry, s: Showers, var: str, min_e: float) -> np.ndarray:
    from flowctl.calo.features import classifier_high, classifier_low

    e = s.energy * 1000.0
    if var == "high":
        return classifier_high(geo, e, s.voxels, min_e)
    return classifier_low(geo, e, s.voxels, min_e, normed=var == "low_normed")


def _challenge_auc(cfg: dict[str, Any], geo: Geometry, truth: Showers, gen: Showers,
                   min_e: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The challenge's DNN classifier (generated = 0, truth = 1) per variant."""
    variants = (cfg.get("classifier") or {}).get("variants") or ["low_normed", "high"]
    if all(v in CALOGAN_VARIANTS for v in variants):  # a CaloGAN config's default list
        variants = ["low_normed", "high"]
    for var in variants:
        if var not in CHALLENGE_VARIANTS:
            raise UserError(f"classifier.variants: {var!r} is not a CaloChallenge variant "
                            f"({', '.join(CHALLENGE_VARIANTS)})")
    return _train_variants(cfg, variants, truth, gen,
                           lambda s, var: _challenge_inputs(geo, s, var, min_e))


def _truth_showers(cfg: dict[str, Any], n: int | None, geo: Geometry | None) -> Showers:
    _, test = load_data(cfg["data"], geo)
    return test.subset(slice(0, n)) if n else test


def _read_generated(path: Path, geo: Geometry | None, cfg: dict[str, Any]) -> Showers:
    d = cfg.get("data") or {}
    sizes = geo.layer_sizes if geo is not None else d.get("layer_sizes")
    try:
        return read_showers(path, "auto", sizes, binning=geo.source if geo else None)
    except DataError as exc:
        raise UserError(str(exc)) from None


def evaluate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Shower plots, separation powers and the classifier AUC, generated vs truth (test)."""
    validate(cfg)
    ev = dict(cfg.get("eval") or {})
    path = run_dir / "samples.h5"
    if not path.exists():
        sample({**cfg, "n": int(ev.get("n_samples", cfg.get("n", 10000))), "energies": None},
               run_dir)
    geo = geometry(cfg, run_dir)
    gen = _read_generated(path, geo, cfg)
    if len(gen) < 10:
        raise UserError(f"{path}: {len(gen)} generated showers; evaluate needs at least 10 "
                        "(sample more: n=...)")
    truth = _truth_showers(cfg, ev.get("n_truth"), geo)
    if geo is not None:
        return _evaluate_challenge(cfg, run_dir, geo, truth, gen, ev)
    return _evaluate_calogan(cfg, run_dir, truth, gen, ev)


def _evaluate_challenge(cfg: dict[str, Any], run_dir: Path, geo: Geometry, truth: Showers,
                        gen: Showers, ev: dict[str, Any]) -> dict[str, Any]:
    """The CaloChallenge's evaluation from the XML geometry (ref §2.2)."""
    from flowctl.calo.features import MIN_ENERGY_MEV, high_level_features
    from flowctl.metrics.calo import separation_powers
    from flowctl.plots import calo as P

    min_e = ev.get("min_energy_mev")
    min_e = float(MIN_ENERGY_MEV.get(geo.dataset, 0.0) if min_e is None else min_e)
    bins = int(ev.get("bins", 50))
    ft = high_level_features(geo, truth.energy * 1000.0, truth.voxels, min_e)
    fg = high_level_features(geo, gen.energy * 1000.0, gen.voxels, min_e)
    sep = separation_powers(ft, fg, bins)
    cc = _classifier_cfg(cfg)
    out: dict[str, Any] = {
        "command": "evaluate", "dataset": geo.dataset, "particle": geo.particle,
        "binning": geo.source, "n_generated": len(gen), "n_truth": len(truth),
        "min_energy_mev": min_e, "separation_power": sep,
        "mean_separation_power": float(np.mean(list(sep.values()))),
        "classifier_settings": {"hidden": list(cc.hidden), "lr": cc.lr,
                                "batch_size": cc.batch_size, "epochs": cc.epochs,
                                "split": list(cc.split)}}
    plots = []
    if ev.get("plots", True) and is_main_process():
        keep = np.unique(np.linspace(0, len(geo.layers) - 1, min(len(geo.layers), 9))
                         .round().astype(int))
        sl = geo.layer_slices
        cols = np.concatenate([np.arange(sl[i].start, sl[i].stop) for i in keep])
        shapes = tuple(geo.image_shapes()[i] for i in keep)
        plots.append(str(P.save(P.average_showers({"truth": truth.voxels[:, cols],
                                                   "generated": gen.voxels[:, cols]},
                                                  shapes, [geo.layer_ids[i] for i in keep]),
                                run_dir / "plots" / "average_shower.png")))
        worst = [k for k, _ in sorted(sep.items(), key=lambda kv: -kv[1])][:23]
        show = ["E_tot/E_inc", *[k for k in worst if k != "E_tot/E_inc"]]
        plots.append(str(P.save(P.feature_histograms({k: ft[k] for k in show},
                                                     {k: fg[k] for k in show}, sep, bins),
                                run_dir / "plots" / "features.png")))
    if ev.get("classifier", True):
        nums, results = _challenge_auc(cfg, geo, truth, gen, min_e)
        out["classifier"] = nums
        if is_main_process() and plots:
            plots.append(_roc_plot(results, run_dir))
    out["plots"] = plots
    update_metrics_json(run_dir, {"evaluate": out})
    if is_main_process():
        _print_eval(out, run_dir, f"DS {geo.dataset} ({geo.particle}), voxels below "
                                  f"{min_e:g} MeV zeroed")
    return out


def _roc_plot(results: dict[str, Any], run_dir: Path) -> str:
    """``RUN/plots/roc.png`` of the classifier runs (name -> (result, ...))."""
    from flowctl.metrics.roc import roc_curve
    from flowctl.plots import calo as P

    curves = {k: (*roc_curve(r.test_labels, r.test_probs)[:2], r.auc)
              for k, (r, _) in results.items()}
    return str(P.save(P.roc_figure(curves), run_dir / "plots" / "roc.png"))


def _print_eval(out: dict[str, Any], run_dir: Path, what: str) -> None:
    sep = out["separation_power"]
    worst = sorted(sep.items(), key=lambda kv: -kv[1])[:3]
    print(f"evaluate: {out['n_generated']} generated vs {out['n_truth']} truth showers "
          f"({what}); mean separation power {out['mean_separation_power']:.4f} (worst: "
          + ", ".join(f"{k} {v:.3f}" for k, v in worst) + ")")
    for k, v in (out.get("classifier") or {}).items():
        print(f"classifier ({k}): AUC {v['auc']:.4f} ± {v['auc_err']:.4f}, "
              f"JSD {v['jsd']:.4f}, best epoch {v['best_epoch']}")
    if out.get("plots"):
        print(f"plots: {run_dir / 'plots'}")


def _evaluate_calogan(cfg: dict[str, Any], run_dir: Path, truth: Showers, gen: Showers,
                      ev: dict[str, Any]) -> dict[str, Any]:
    from flowctl.metrics.calo import CALOGAN_CELLS_MM, separation_powers, shower_features
    from flowctl.plots import calo as P

    thr = _threshold(cfg)
    cell = CALOGAN_CELLS_MM if tuple(truth.layer_shapes) == CALOGAN_LAYERS else None
    ft = shower_features(truth.energy, truth.voxels, truth.layer_shapes, cell, thr)
    fg = shower_features(gen.energy, gen.voxels, gen.layer_shapes, cell, thr)
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
            plots.append(_roc_plot(results, run_dir))
    out["plots"] = plots
    update_metrics_json(run_dir, {"evaluate": out})
    if is_main_process():
        _print_eval(out, run_dir, "CaloGAN")
    return out


def classify(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The classifier on ``truth=FILE`` vs ``generated=FILE`` (defaults: the run's test split
    and samples.h5); writes the ROC plot and the weights w = D/(1-D) of the generated
    showers (``classifier_weights.h5``)."""
    import h5py

    from flowctl.classifiers import density_ratio
    from flowctl.metrics.roc import roc_curve
    from flowctl.plots import calo as P

    validate(cfg)
    geo = geometry(cfg, run_dir)
    gpath = cfg.get("generated") or run_dir / "samples.h5"
    if not Path(gpath).exists():
        raise UserError(f"generated={gpath}: no such file (run `flowctl sample` first or pass "
                        "generated=FILE)")
    gen = _read_generated(Path(gpath), geo, cfg)
    if cfg.get("truth"):
        truth = _read_generated(Path(cfg["truth"]), geo, cfg)
    else:
        truth = _truth_showers(cfg, None, geo)
    if gen.voxels.shape[1] != truth.voxels.shape[1]:
        raise UserError(f"{gpath} has {gen.voxels.shape[1]} voxels, the truth "
                        f"{truth.voxels.shape[1]}")
    if geo is not None:
        ev = cfg.get("eval") or {}
        from flowctl.calo.features import MIN_ENERGY_MEV

        me = ev.get("min_energy_mev")
        nums, results = _challenge_auc(cfg, geo, truth, gen, float(
            MIN_ENERGY_MEV.get(geo.dataset, 0.0) if me is None else me))
    else:
        nums, results = _auc_runs(cfg, truth, gen)
    out: dict[str, Any] = {"command": "classify", "truth": truth.source, "generated": str(gpath),
                           "n_truth": len(truth), "n_generated": len(gen), "classifier": nums}
    if is_main_process():
        wpath = run_dir / "classifier_weights.h5"
        with h5py.File(wpath, "w") as f:
            for k, (r, xg) in results.items():
                f.create_dataset(k, data=density_ratio(r.predict(xg)))
        out["weights"] = str(wpath)
        curves = {k: (*roc_curve(r.test_labels, r.test_probs)[:2], r.auc)
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


def _context_sampler(flow1: torch.nn.Module, cfg: dict[str, Any]):
    _, scale, e_ref = _pre(cfg)
    gen = torch.Generator().manual_seed(int(cfg.get("seed", 0)) + 7)

    def draw(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        with torch.no_grad():
            p = next(flow1.parameters())
            if p.device != device:
                flow1.to(device)
            e_inc = draw_energies(cfg, n, gen).to(device, torch.float32)
            return _energy_to_context(flow1, e_inc, scale, e_ref)[1].to(dtype)
    return draw


def _student_of(tspec: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    keep = {k: v for k, v in over.items() if k in STUDENT_KEYS and v is not None}
    return {**tspec, **keep, "kind": "iaf"}


def _distill_one(teacher: torch.nn.Module, sspec: dict[str, Any], sizes: list[int],
                 data_tr: tuple[np.ndarray, np.ndarray], data_te: tuple[np.ndarray, np.ndarray],
                 tr: dict[str, Any], out_dir: Path, scfg: dict[str, Any], sampler: Any
                 ) -> tuple[torch.nn.Module, dict[str, Any], dict[str, float]]:
    from flowctl.training.distill import (
        DistillLoss,
        DistillTerms,
        check_compatible,
        copy_permutations,
        init_from_teacher,
    )

    student = _build(sspec, sizes)
    copy_permutations(teacher, student)
    dc = dict(scfg.get("distill") or {})
    try:
        check_compatible(teacher, student)
        if dc.get("init", "random") == "teacher":
            init_from_teacher(teacher, student)
    except ValueError as exc:
        raise UserError(f"teacher and student: {exc}"
                        + (" (distill.init=teacher needs the teacher's flow.hidden)"
                           if "shape" in str(exc) else "")) from None
    loss = DistillLoss(teacher, beta=float(dc.get("beta", 0.5)), context_sampler=sampler,
                       terms=DistillTerms(intermediate=bool(dc.get("intermediate", True)),
                                          params=bool(dc.get("params", True))))
    summ = _fit(student, data_tr, data_te, tr, out_dir, scfg, loss=loss)
    _loss_plot(out_dir)
    return student, summ, dict(loss.last)


def distill(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Probability density distillation of IAF student(s) from a teacher run (ref §4): the
    shower flow of a CaloFlow run, or both shower flows of a layerwise (iCaloFlow) run."""
    validate(cfg)
    t0 = time.perf_counter()
    scfg, tdir, out_dir = _student_setup(cfg, run_dir)
    if not (tdir / "config.yaml").exists() or find_checkpoint(tdir) is None:
        raise UserError(f"teacher={tdir} is not a trained run (no config.yaml or checkpoint)")
    tcfg = read_config(tdir)
    if tcfg.get("stage") != "teacher" or tcfg.get("app") != "calo":
        raise UserError(f"teacher={tdir} is a {tcfg.get('app')}/{tcfg.get('stage')} run; "
                        "distill needs a calo teacher run (config=caloflow_teacher)")
    model = tcfg.get("model", "caloflow")
    tspec = dict(tcfg["flow"])
    if tspec.get("kind") != "maf":
        raise UserError(f"teacher={tdir} is a {tspec.get('kind')} flow; the teacher must be maf")
    for key in ("data", "preprocessing", "incident_energy", "energy_flow"):
        if key in tcfg:
            scfg[key] = copy.deepcopy(tcfg[key]) if key != "data" else \
                {**tcfg[key], **{k: v for k, v in (scfg.get("data") or {}).items()
                                 if k in ("path", "test_path", "max_showers") and v}}
    scfg["model"] = model
    over = dict(scfg.get("flow") or {})
    scfg["flow"] = _student_of(tspec, over)
    if model == "layerwise":
        scfg["flow_first"] = _student_of(dict(tcfg["flow_first"]), over)
    scfg["energy_run"] = str(energy_dir(tcfg, tdir).resolve())
    scfg["teacher"] = str(tdir.resolve())
    scfg["stage"] = "student"
    validate(scfg)
    geo = geometry(tcfg, tdir)
    sizes = geo.layer_sizes if geo is not None else _layer_sizes(tcfg)
    teacher = _load(tdir, tspec, sizes)
    flow1 = _load_energy(tcfg, tdir)

    train_s, test_s = load_data(scfg["data"], geo)
    noise, scale, e_ref = _pre(scfg)
    seed = int(scfg.get("seed", 0))
    ptr = prepare(train_s, noise, seed, scale, e_ref)
    pte = prepare(test_s, noise, seed + 1, scale, e_ref)
    out_dir.mkdir(parents=True, exist_ok=True)
    if geo is not None:
        shutil.copyfile(geo.source, out_dir / "binning.xml")
    write_config(out_dir, scfg)
    dc = dict(scfg.get("distill") or {})
    out: dict[str, Any] = {"command": "distill", "teacher": str(tdir),
                           "student_run": str(out_dir), "model": model}
    base = dict(scfg["trainer"])
    if model == "caloflow":
        sampler = _context_sampler(flow1, scfg) \
            if dc.get("z_context", "energy_flow") == "energy_flow" else None
        tr = _trainer_cfg(base, None, scfg.get("milestone_epochs"), len(train_s))
        student, summ, last = _distill_one(teacher, scfg["flow"], sizes, (ptr.x, ptr.ctx),
                                           (pte.x, pte.ctx), tr, out_dir, scfg, sampler)
        out.update(parameters=_params(student), teacher_parameters=_params(teacher),
                   best_kl=summ.get("best_val_loss"), best_epoch=summ.get("best_epoch"),
                   epochs=summ.get("epochs"), last_terms=last)
    else:
        first_t = _load(tdir / "first", dict(tcfg["flow_first"]), sizes)
        ftr, rtr = _layerwise_inputs(ptr, sizes)
        fte, rte = _layerwise_inputs(pte, sizes)
        # z-part contexts: the batch's own (shuffled) contexts
        tr1 = _trainer_cfg(base, None, scfg.get("milestone_epochs"), len(ftr[0]))
        s1, summ1, _ = _distill_one(first_t, scfg["flow_first"], sizes, ftr, fte, tr1,
                                    out_dir / "first", scfg, None)
        tr2 = _trainer_cfg(base, None, scfg.get("milestone_epochs"), len(rtr[0]))
        s2, summ2, last = _distill_one(teacher, scfg["flow"], sizes, rtr, rte, tr2, out_dir,
                                       scfg, None)
        out.update(parameters=_params(s1) + _params(s2),
                   teacher_parameters=_params(first_t) + _params(teacher),
                   best_kl=summ2.get("best_val_loss"), best_epoch=summ2.get("best_epoch"),
                   epochs=summ2.get("epochs"), first_best_kl=summ1.get("best_val_loss"),
                   last_terms=last)
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    update_metrics_json(out_dir, {"distill": out})
    if out_dir.resolve() != run_dir.resolve() and is_main_process():
        from flowctl.rundir import mark_complete

        mark_complete(out_dir, "distill")  # TEACHER/student is a run of its own
    if is_main_process():
        kl = out["best_kl"]
        extra = (f" (first layer {out['first_best_kl']:.4g})"
                 if out.get("first_best_kl") is not None else "")
        print(f"distill: student ({out['parameters']} parameters) from {tdir}; best "
              f"KL(student||teacher) {kl:.4g} nats{extra} at epoch {out['best_epoch']}; "
              f"{out['wall_s']:.1f} s")
        print(f"student run directory: {out_dir}")
    return out


COMMANDS = {"train": train, "sample": sample, "evaluate": evaluate, "distill": distill,
            "classify": classify}
