"""Density estimation: fit a flow to samples, then sample it and score it.

Config keys used here: ``flow`` (a :func:`flowctl.flows.build` spec; ``features: null`` takes
the data's dimension), ``data`` (a toy: ``kind: ring|moons|checkerboard|gmm``, or
``kind: table`` with ``path``/``key``/``columns``), ``trainer`` (see configs/trainer/),
``n`` (samples for ``sample``) and ``eval`` (sizes for ``evaluate``).
"""

from __future__ import annotations

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
    check_finite,
    is_main_process,
    load_weights,
    read_config,
    read_metrics_jsonl,
    update_metrics_json,
    write_config,
)
from flowctl.data.table import DataError, check_trainable, load_table, split
from flowctl.data.toy import TOYS, Toy, make_toy

__all__ = ["COMMANDS", "evaluate", "load_data", "load_flow", "sample", "train"]

TOY_KEYS = ("kind", "n_train", "n_val", "n_test", "seed", "params", "path", "key", "columns",
            "delimiter", "split")


@dataclass
class DensityData:
    """Train/val/test arrays ``[N, D]`` (float32) and, for toys, the true distribution."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    truth: Toy | None = None
    source: str = ""

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])


def _toy(data_cfg: dict[str, Any]) -> Toy:
    kind = data_cfg.get("kind")
    params = dict(data_cfg.get("params") or {})
    try:
        return make_toy(kind, **params)
    except TypeError as exc:
        raise UserError(f"data.params for toy {kind!r}: {exc}") from None


def load_data(data_cfg: dict[str, Any]) -> DensityData:
    """Build train/val/test sets from the ``data`` config."""
    kind = data_cfg.get("kind")
    seed = int(data_cfg.get("seed", 0))
    if kind == "table" or (kind not in TOYS and data_cfg.get("path")):
        path = data_cfg.get("path")
        if not path:
            raise UserError("data.path is required for table data: pass data.path=FILE")
        x = load_table(path, key=data_cfg.get("key"), columns=data_cfg.get("columns"),
                       delimiter=data_cfg.get("delimiter"))
        check_trainable(x, str(path), "table", min_rows=3)
        try:
            tr, va, te = split(x, data_cfg.get("split") or (0.8, 0.1, 0.1), seed=seed)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
        check_trainable(tr, str(path))
        return DensityData(tr, va, te, None, str(path))
    if kind not in TOYS:
        raise UserError(f"unknown data.kind {kind!r}; available: table, {', '.join(TOYS)}")
    toy = _toy(data_cfg)
    sets = []
    for i, key in enumerate(("n_train", "n_val", "n_test")):
        n = int(data_cfg.get(key, 0))
        if n < (2 if key == "n_train" else 0):
            raise UserError(f"data.{key}={n}: expected an integer >= "
                            f"{2 if key == 'n_train' else 0}")
        rng = np.random.default_rng([seed, i])
        sets.append(toy.sample(n, rng).astype(np.float32))
    return DensityData(*sets, truth=toy, source=f"toy:{kind}")


def _flow_spec(cfg: dict[str, Any], dim: int) -> dict[str, Any]:
    spec = dict(cfg["flow"])
    if spec.get("features") is None:
        spec["features"] = dim
    elif int(spec["features"]) != dim:
        raise UserError(f"flow.features={spec['features']} but the data has {dim} columns")
    return spec


def _nll_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return -model.log_prob(batch[0]).mean()


LOSSES = ("nll", "flow_matching", "flow_matching_ot", "mflow")


def _loss_name(cfg: dict[str, Any]) -> str:
    """``trainer.loss`` (default: flow_matching for a cnf, the two-phase mflow loss for an
    mflow, else nll), checked against the flow."""
    kind = (cfg.get("flow") or {}).get("kind")
    name = (cfg.get("trainer") or {}).get("loss")
    if name is None:
        name = {"cnf": "flow_matching", "mflow": "mflow"}.get(kind, "nll")
    if name not in LOSSES:
        raise UserError(f"trainer.loss={name!r}: expected one of {', '.join(LOSSES)}")
    if name.startswith("flow_matching") and kind != "cnf":
        raise UserError(f"trainer.loss={name!r} needs flow.kind=cnf (flow={kind!r} trains by nll)")
    if (name == "mflow") != (kind == "mflow"):
        raise UserError(f"trainer.loss={name!r} with flow.kind={kind!r}: an mflow trains by "
                        "the two-phase loss 'mflow' only, and only an mflow does")
    return name


def _objective_loss(name: str):
    def loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return model(batch[0], objective=name).mean()  # through forward: DDP-safe
    return loss


@torch.no_grad()
def _reconstruction_mse(flow: torch.nn.Module, x: np.ndarray, batch: int = 8192) -> float:
    """Mean over rows of ``|x - project(x)|²`` (an mflow's distance to its manifold)."""
    out = []
    for i in range(0, len(x), batch):
        xb = torch.as_tensor(x[i:i + batch], dtype=torch.float32)
        out.append((xb - flow.project(xb)).pow(2).sum(1).double().numpy())
    return float(np.mean(np.concatenate(out))) if out else float("nan")


def _write_loss_curve(run_dir: Path) -> Path | None:
    records = read_metrics_jsonl(run_dir)
    if not records or not is_main_process():
        return None
    from flowctl.plots.density import loss_curve, save

    return save(loss_curve(records), run_dir / "plots" / "loss.png")


def train(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Fit the flow (``trainer.loss``: nll, or flow_matching[_ot] for a cnf); writes
    checkpoints, metrics and a loss curve."""
    from torch.utils.data import TensorDataset

    from flowctl.training import seed_everything
    from flowctl.training import train as fit

    t0 = time.perf_counter()
    loss_name = _loss_name(cfg)
    data = load_data(cfg["data"])
    cfg["flow"] = _flow_spec(cfg, data.dim)
    write_config(run_dir, cfg)  # features filled in: the run dir alone rebuilds the flow
    seed_everything(int(cfg["trainer"].get("seed", 0)))
    flow = build_flow(cfg["flow"])
    flow.initialize(torch.from_numpy(data.train))
    val = TensorDataset(torch.from_numpy(data.val)) if len(data.val) else None
    trainer_cfg = {k: v for k, v in dict(cfg["trainer"]).items() if k != "loss"}
    train_set, val_set = TensorDataset(torch.from_numpy(data.train)), val
    phases: dict[str, Any] = {}
    if loss_name == "mflow":  # M-flow: the manifold by reconstruction, then the density on it
        first = fit(flow, _objective_loss("reconstruction"), train_set, val_set, trainer_cfg,
                    run_dir / "manifold", run_config=cfg)
        phases["manifold_best_val_reconstruction"] = first.get("best_val_loss")
        load_weights(flow, run_dir / "manifold", "best")
        flow.train()
        loss_fn = _objective_loss("latent_nll")  # the outer flow gets no gradient: frozen
    else:
        loss_fn = _nll_loss if loss_name == "nll" else _objective_loss(loss_name)
    summary = fit(flow, loss_fn, train_set, val_set, trainer_cfg, run_dir, run_config=cfg)
    _write_loss_curve(run_dir)
    best_val_nll = summary.get("best_val_loss")
    if loss_name != "nll":  # the monitored loss is the flow-matching loss: score the data
        scored = data.val if len(data.val) else data.train
        best_val_nll = float(-np.mean(_log_prob(load_flow(cfg, run_dir), scored)))
        best_val_nll = best_val_nll if math.isfinite(best_val_nll) else None  # null, not nan
    out = {
        "command": "train",
        "data": data.source,
        "dim": data.dim,
        "n_train": len(data.train),
        "parameters": sum(p.numel() for p in flow.parameters()),
        "loss": loss_name,
        **phases,
        "best_val_loss": summary.get("best_val_loss"),
        "best_val_nll": best_val_nll,
        "best_epoch": summary.get("best_epoch"),
        "epochs": summary.get("epochs"),
        "steps": summary.get("steps"),
        "train_wall_s": round(time.perf_counter() - t0, 2),
        "stopped_reason": summary.get("stopped_reason"),
        "skipped_batches": summary.get("skipped_batches"),
        "restores": summary.get("restores"),
    }
    update_metrics_json(run_dir, {"train": out})
    if is_main_process():
        print(f"train: {data.source} D={data.dim}, {out['parameters']} parameters, "
              f"best val NLL {_fmt(out['best_val_nll'])} nats at epoch {out['best_epoch']}"
              f"{'' if loss_name == 'nll' else f' (trained by {loss_name})'}, "
              f"{out['train_wall_s']:.1f} s")
        print(f"run directory: {run_dir}")
    return out


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and math.isfinite(v) else str(v)


def load_flow(cfg: dict[str, Any], run_dir: Path, which: str = "best") -> torch.nn.Module:
    """Rebuild the run's flow from its config and load its best (or last) weights."""
    spec = dict(cfg["flow"])
    if spec.get("features") is None:
        raise UserError(f"run directory {run_dir}: config.yaml has no flow.features; "
                        "was it written by `flowctl train`?")
    return load_weights(build_flow(spec), run_dir, which)


@torch.no_grad()
def _log_prob(flow: torch.nn.Module, x: np.ndarray, batch: int = 8192) -> np.ndarray:
    out = []
    for i in range(0, len(x), batch):
        xb = torch.as_tensor(x[i:i + batch], dtype=torch.float32)
        out.append(flow.log_prob(xb).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


@torch.no_grad()
def _sample(flow: torch.nn.Module, n: int, batch: int = 8192) -> np.ndarray:
    out = []
    for i in range(0, n, batch):
        out.append(flow.sample(min(batch, n - i)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def sample(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Draw ``n`` samples from the trained flow into ``run_dir/samples.h5`` (dataset samples)."""
    from flowctl.atomic import write_h5

    n = int(cfg.get("n", 10000))
    if n <= 0:
        raise UserError(f"n must be a positive integer, got {n}")
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    flow = load_flow(cfg, run_dir)
    t0 = time.perf_counter()
    x = _sample(flow, n)
    dt = time.perf_counter() - t0
    check_finite(x, "samples", run_dir)
    path = run_dir / "samples.h5"
    if is_main_process():
        write_h5(path, {"samples": x}, {"n": n, "seed": seed})
    out = {"command": "sample", "n": n, "file": str(path), "seconds": round(dt, 3),
           "samples_per_s": round(n / max(dt, 1e-9), 1)}
    update_metrics_json(run_dir, {"sample": out})
    if is_main_process():
        print(f"sample: {n} samples in {dt:.2f} s -> {path} (dataset 'samples')")
    return out


def _grid(lo: np.ndarray, hi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs = np.linspace(lo[0], hi[0], n)
    ys = np.linspace(lo[1], hi[1], n)
    xx, yy = np.meshgrid(xs, ys)
    return xs, ys, np.stack([xx.ravel(), yy.ravel()], 1)


def evaluate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Test NLL (± s.e.), KL(p||q) for exact toys, and plots; or the NLL of a table file."""
    from flowctl.metrics.density import kl_divergence, nll
    from flowctl.plots import density as P

    ev = dict(cfg.get("eval") or {})
    seed = int(cfg.get("seed", 0))
    flow = load_flow(cfg, run_dir)
    dim = int(cfg["flow"]["features"])
    data_cfg = dict(cfg["data"])
    out: dict[str, Any] = {"command": "evaluate"}
    plots: list[str] = []
    main = is_main_process()

    table_path = data_cfg.get("path")
    trained_on = (read_config(run_dir).get("data") or {}).get("path")
    if table_path and (data_cfg.get("kind") != "table" or table_path != trained_on):
        # evaluate run=D data.path=FILE on a run trained on other data: score all rows.
        x = load_table(table_path, key=data_cfg.get("key"), columns=data_cfg.get("columns"),
                       delimiter=data_cfg.get("delimiter"))
        if x.shape[1] != dim:
            raise DataError(f"{table_path}: has {x.shape[1]} columns but the flow in {run_dir} "
                            f"models {dim}; pick columns with data.columns=[...]")
        m, se = nll(_log_prob(flow, x))
        out.update({"file": str(table_path), "rows": len(x), "nll": m, "nll_se": se})
        update_metrics_json(run_dir, {"evaluate_file": out})
        if main:
            print(f"evaluate: {table_path}: {len(x)} rows, mean NLL {m:.4f} ± {se:.4f} nats")
        return out

    try:
        data = load_data(data_cfg)
    except DataError as exc:
        raise UserError(f"cannot reload the run's data: {exc}") from None
    if data.dim != dim:
        raise UserError(f"run directory {run_dir} is incompatible: its data has {data.dim} "
                        f"columns but its flow models {dim}")
    lq_test = _log_prob(flow, data.test)
    m, se = nll(lq_test)
    out.update({"data": data.source, "n_test": len(data.test), "test_nll": m, "test_nll_se": se})
    manifold = cfg["flow"].get("kind") == "mflow"  # its density lives on a d-dim manifold
    if manifold:
        out["test_reconstruction_mse"] = _reconstruction_mse(flow, data.test)
    truth = data.truth
    if truth is not None and truth.exact and not manifold:
        n_kl = int(ev.get("n_kl", 100000))
        x = truth.sample(n_kl, np.random.default_rng([seed, 1000])).astype(np.float32)
        kl, kl_se = kl_divergence(truth.log_prob(x), _log_prob(flow, x))
        test_true = float(-np.mean(truth.log_prob(data.test)))
        out.update({"kl": kl, "kl_se": kl_se, "n_kl": n_kl, "test_nll_truth": test_true})

    n_plot = int(ev.get("n_plot", 20000))
    if main and ev.get("plots", True):
        torch.manual_seed(seed)
        xs_flow = _sample(flow, n_plot)
        ref = data.test[:n_plot]
        plots.append(str(P.save(P.samples_figure(xs_flow, ref), run_dir / "plots" / "samples.png")))
        if dim == 2:
            both = np.concatenate([ref, xs_flow])
            lo, hi = np.quantile(both, 0.002, axis=0), np.quantile(both, 0.998, axis=0)
            pad = 0.1 * (hi - lo)
            xs, ys, grid = _grid(lo - pad, hi + pad, int(ev.get("grid", 200)))
            shape = (len(ys), len(xs))
            lq = _log_prob(flow, grid.astype(np.float32)).reshape(shape)
            lp = None
            if truth is not None and truth.exact:
                lp = truth.log_prob(grid).reshape(shape)
            fig = P.density_heatmaps(xs, ys, lq, lp)
            plots.append(str(P.save(fig, run_dir / "plots" / "density.png")))
        curve = _write_loss_curve(run_dir)
        if curve is not None:
            plots.append(str(curve))
    out["plots"] = plots
    update_metrics_json(run_dir, {"evaluate": out})
    if main:
        line = f"evaluate: {data.source}: test NLL {m:.4f} ± {se:.4f} nats ({len(data.test)} rows)"
        if "kl" in out:
            line += (f"; KL(p||q) {out['kl']:.4f} ± {out['kl_se']:.4f} nats "
                     f"(truth NLL {out['test_nll_truth']:.4f})")
        print(line)
        if plots:
            print(f"plots: {run_dir / 'plots'}")
    return out


COMMANDS = {"train": train, "sample": sample, "evaluate": evaluate}
