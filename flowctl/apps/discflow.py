"""DiscFlow (arXiv:2110.13632): likelihood training of a flow reweighted by a discriminator.

A discriminator ``D(x) = P(truth | x)`` is trained alongside the flow on truth batches vs
flow samples; the flow's NLL is weighted per event by ``w = (D / (1 - D))^α`` (detached,
clipped, mean 1 per batch), so regions the flow under-populates (D > ½) weigh more. ``α``
(``discflow.strength``) ramps linearly from 0 after ``discflow.start_steps`` over
``discflow.ramp_steps`` optimizer steps. ``trainer.loss=nll`` trains the same model plainly,
for comparisons at equal epochs.

Config: like the density app (``flow``, ``data``, ``trainer`` with the extra key ``loss``:
nll | discflow), plus ``discflow`` (``hidden``, ``strength``, ``start_steps``, ``ramp_steps``,
``clip``, ``disc_weight``) and ``classifier`` (the truth-vs-generated AUC of ``evaluate``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flowctl.apps.common import (
    UserError,
    find_checkpoint,
    is_main_process,
    update_metrics_json,
    write_config,
)
from flowctl.apps.density import load_data

__all__ = ["COMMANDS", "DiscFlowModel", "evaluate", "train"]

LOSSES = ("nll", "discflow")


class DiscFlowModel(nn.Module):
    """A flow plus a discriminator MLP on standardized data ``x [N, D]``.

    ``loss(x)``: in training mode the DiscFlow objective (or the NLL for ``mode="nll"``), in
    eval mode the plain NLL (nats), so validation losses compare across modes.
    """

    def __init__(self, flow: nn.Module, dim: int, mean: np.ndarray, std: np.ndarray,
                 mode: str = "discflow", hidden: tuple[int, ...] = (64, 64),
                 strength: float = 1.0, start_steps: int = 0, ramp_steps: int = 500,
                 clip: float = 5.0, disc_weight: float = 1.0) -> None:
        super().__init__()
        if mode not in LOSSES:
            raise ValueError(f"trainer.loss must be one of {', '.join(LOSSES)}, got {mode!r}")
        self.flow, self.mode = flow, mode
        layers: list[nn.Module] = []
        n = dim
        for h in hidden:
            layers += [nn.Linear(n, h), nn.LeakyReLU()]
            n = h
        self.disc = nn.Sequential(*layers, nn.Linear(n, 1))
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.strength, self.start, self.ramp = float(strength), int(start_steps), int(ramp_steps)
        self.clip, self.disc_weight = float(clip), float(disc_weight)

    def alpha(self) -> float:
        """The current exponent α of the weights."""
        s = int(self.step) - self.start
        if s <= 0:
            return 0.0
        return self.strength * min(1.0, s / max(self.ramp, 1))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        lq = self.flow.log_prob(x)
        if not self.training or self.mode == "nll":
            return -lq.mean()
        self.step += 1
        with torch.no_grad():
            gen = self.flow.sample(len(x))
        lt = self.disc((x - self.mean) / self.std).squeeze(-1)
        lg = self.disc((gen - self.mean) / self.std).squeeze(-1)
        bce = (nn.functional.binary_cross_entropy_with_logits(lt, torch.ones_like(lt))
               + nn.functional.binary_cross_entropy_with_logits(lg, torch.zeros_like(lg)))
        a = self.alpha()
        with torch.no_grad():
            # log(D/(1-D)) is the logit itself
            w = torch.exp((a * lt).clamp(-np.log(self.clip), np.log(self.clip)))
            w = w / w.mean()
        return -(w * lq).mean() + self.disc_weight * bce


def _loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return model.loss(batch[0])


def _model(cfg: dict[str, Any], dim: int, mean: np.ndarray, std: np.ndarray) -> DiscFlowModel:
    from flowctl.flows import build

    spec = dict(cfg["flow"])
    if spec.get("features") is None:
        spec["features"] = dim
    cfg["flow"] = spec
    d = dict(cfg.get("discflow") or {})
    try:
        flow = build(spec)
        return DiscFlowModel(flow, dim, mean, std, str(cfg["trainer"].get("loss", "nll")),
                             tuple(d.get("hidden", (64, 64))), float(d.get("strength", 1.0)),
                             int(d.get("start_steps", 0)), int(d.get("ramp_steps", 500)),
                             float(d.get("clip", 5.0)), float(d.get("disc_weight", 1.0)))
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"config: {exc}") from None


def train(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train the flow with ``trainer.loss`` (nll | discflow) on the config's data."""
    from torch.utils.data import TensorDataset

    from flowctl.training import seed_everything
    from flowctl.training import train as fit

    t0 = time.perf_counter()
    data = load_data(cfg["data"])
    mean, std = data.train.mean(0), data.train.std(0) + 1e-8
    seed_everything(int(cfg["trainer"].get("seed", 0)))
    model = _model(cfg, data.dim, mean, std)
    write_config(run_dir, cfg)
    model.flow.initialize(torch.from_numpy(data.train))
    tcfg = {k: v for k, v in cfg["trainer"].items() if k != "loss"}
    summary = fit(model, _loss, TensorDataset(torch.from_numpy(data.train)),
                  TensorDataset(torch.from_numpy(data.val)), tcfg, run_dir, run_config=cfg)
    out = {"command": "train", "loss": model.mode, "data": data.source, "dim": data.dim,
           "best_val_nll": summary.get("best_val_loss"), "best_epoch": summary.get("best_epoch"),
           "epochs": summary.get("epochs"), "final_alpha": model.alpha(),
           "train_wall_s": round(time.perf_counter() - t0, 2)}
    update_metrics_json(run_dir, {"train": out})
    if is_main_process():
        print(f"train ({model.mode}): {data.source}, best val NLL {out['best_val_nll']:.4f} nats "
              f"at epoch {out['best_epoch']}, {out['train_wall_s']:.1f} s")
        print(f"run directory: {run_dir}")
    return out


def _load(cfg: dict[str, Any], run_dir: Path, which: str) -> DiscFlowModel:
    from flowctl.apps.common import read_config
    from flowctl.training import TrainingError, load_checkpoint

    if cfg["flow"].get("features") is None:  # the run's config.yaml has it filled in
        cfg["flow"] = dict(read_config(run_dir)["flow"])
    data_dim = int(cfg["flow"]["features"])
    model = _model(cfg, data_dim, np.zeros(data_dim), np.ones(data_dim))
    path = find_checkpoint(run_dir, which)
    if path is None:
        raise UserError(f"run directory {run_dir} has no checkpoint")
    try:
        state = load_checkpoint(path)["model"]
    except TrainingError as exc:
        raise UserError(str(exc)) from None
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    return model.eval()


def evaluate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Test NLL and the AUC of a classifier truth (test split) vs as many flow samples."""
    from flowctl.classifiers import ClassifierConfig, train_classifier

    ev = dict(cfg.get("eval") or {})
    model = _load(cfg, run_dir, str(ev.get("checkpoint", "last")))
    data = load_data(cfg["data"])
    torch.manual_seed(int(cfg.get("seed", 0)))
    with torch.no_grad():
        x = torch.from_numpy(data.test)
        nll = float(-model.flow.log_prob(x).mean())
        gen = model.flow.sample(len(data.test)).numpy()
    try:
        res = train_classifier(gen, data.test, ClassifierConfig.from_dict(cfg.get("classifier")))
    except ValueError as exc:
        raise UserError(f"classifier: {exc}") from None
    out = {"command": "evaluate", "loss": model.mode, "checkpoint": ev.get("checkpoint", "last"),
           "test_nll": nll, "auc": res.auc, "auc_err": res.auc_err, "jsd": res.jsd,
           "n_test": len(data.test)}
    update_metrics_json(run_dir, {"evaluate": out})
    if is_main_process():
        print(f"evaluate ({model.mode}): test NLL {nll:.4f} nats; truth vs generated AUC "
              f"{res.auc:.4f} ± {res.auc_err:.4f} ({len(data.test)} each)")
    return out


COMMANDS = {"train": train, "evaluate": evaluate}
