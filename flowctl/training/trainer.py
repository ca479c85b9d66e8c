"""The generic training loop: any ``nn.Module`` with a loss function.

It knows nothing about flows, configs files or plots. See :func:`train`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    Sampler,
    Subset,
    TensorDataset,
)

from flowctl.atomic import write_text

from . import distributed as D
from .checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    TOP_DIR,
    copy_atomic,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    to_plain,
)
from .config import accum_at, validate_config
from .errors import TrainingError, TrainingInterrupted
from .optimizers import adam
from .progress import Progress
from .schedules import LRSchedule

LossFn = Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → ``cuda`` if available else ``cpu``; otherwise ``torch.device(name)``.

    Raises :class:`TrainingError` for an unknown name or a CUDA device that is not there.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise TrainingError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"device {name!r} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TrainingError(
                f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) visible"
            )
    return dev


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _json_num(x: float | None) -> float | None:
    return x if _finite(x) else None


def _clone_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _clone_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_clone_cpu(v) for v in obj)
    return copy.deepcopy(obj)


def _batches_for_steps(max_steps: int, per_epoch: int, accum: Any) -> int:
    """Batches consumed by ``max_steps`` optimizer steps at ``per_epoch`` batches per epoch."""
    steps = batches = epoch = 0
    while True:
        k = accum_at(accum, epoch)
        groups = math.ceil(per_epoch / k)
        if steps + groups >= max_steps:
            return batches + min((max_steps - steps) * k, per_epoch)
        steps, batches, epoch = steps + groups, batches + per_epoch, epoch + 1


def _as_tuple(batch: Any) -> tuple[Any, ...]:
    if isinstance(batch, torch.Tensor):
        return (batch,)
    return tuple(batch)


def _batch_indexable(ds: Dataset) -> bool:
    """True if ``ds[list_of_indices]`` returns a whole batch (TensorDataset, or Subsets of it)."""
    while isinstance(ds, Subset):
        ds = ds.dataset
    return isinstance(ds, TensorDataset)


def _loader(ds: Dataset, sampler: Sampler[int], batch_size: int, num_workers: int, pin: bool,
            generator: torch.Generator | None) -> DataLoader:
    """A DataLoader over ``sampler``'s order; TensorDatasets are indexed a batch at a time
    (one gather per tensor instead of ``batch_size`` item look-ups and a collate)."""
    if _batch_indexable(ds):
        base = ds
        while isinstance(base, Subset):
            base = base.dataset
        pin = pin and all(not t.is_cuda for t in base.tensors)  # type: ignore[attr-defined]
        return DataLoader(ds, batch_size=None, sampler=BatchSampler(sampler, batch_size, False),
                          num_workers=num_workers, pin_memory=pin, generator=generator)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin, generator=generator, drop_last=False)


class _StopSignals:
    """SIGTERM/SIGINT handlers that only raise a flag; the old handlers come back on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:  # noqa: PYI034
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now (last.pt stays intact)
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


class _Run:
    """State and steps of one call to :func:`train`."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn, train_set: Dataset,
                 val_set: Dataset | None, c: dict[str, Any], run_dir: Path,
                 run_config: Mapping[str, Any] | None, device: torch.device,
                 ctx: D.DistContext, signals: _StopSignals) -> None:
        self.c, self.run_dir, self.device, self.ctx, self.signals = c, run_dir, device, ctx, signals
        self.model, self.loss_fn = model, loss_fn
        self.run_config = to_plain(run_config) if run_config is not None else None
        self.ckpt_dir = run_dir / "checkpoints"
        self.last_path, self.best_path = self.ckpt_dir / "last.pt", self.ckpt_dir / "best.pt"
        self.metrics_path = run_dir / "metrics.jsonl"
        self.top_dir = self.ckpt_dir / TOP_DIR
        self.progress = Progress(ctx.is_main, c["log_every"])
        self.monitor = "val_loss" if val_set is not None else "train_loss"

        self.use_bf16 = bool(c["bf16"]) and device.type == "cuda"
        if c["bf16"] and device.type != "cuda":
            warnings.warn("trainer.bf16 is ignored on CPU", stacklevel=3)
            self.progress.message("warning: trainer.bf16=true ignored on CPU (CUDA only)")

        self.bs = c["batch_size"]
        self.sampler = D.ResumableSampler(train_set, seed=c["seed"], rank=ctx.rank,
                                          world_size=ctx.world_size)
        self.loader_gen = torch.Generator()
        self.loader = _loader(train_set, self.sampler, self.bs, c["num_workers"],
                              device.type == "cuda", self.loader_gen)
        self.val_loader = None
        if val_set is not None:
            shard = D.ShardSampler(len(val_set), ctx.rank, ctx.world_size)  # type: ignore[arg-type]
            self.val_loader = _loader(val_set, shard, self.bs, c["num_workers"],
                                      device.type == "cuda", None)
        self.per_rank = self.sampler.num_samples
        self.steps_per_epoch = math.ceil(self.per_rank / self.bs)
        if self.steps_per_epoch == 0:
            raise TrainingError("training set is empty")
        # the lr schedule counts batches (= optimizer steps when grad_accum is 1)
        total = self.steps_per_epoch * c["epochs"] if c["epochs"] is not None else None
        if c["max_steps"] is not None:
            cap = _batches_for_steps(c["max_steps"], self.steps_per_epoch, c["grad_accum"])
            total = cap if total is None else min(total, cap)
        self.schedule = LRSchedule(c["schedule"], c["lr"], total, warmup_steps=c["warmup_steps"],
                                   min_lr=c["min_lr"], milestones=c["milestones"],
                                   gamma=c["gamma"])
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise TrainingError("the model has no trainable parameters")
        self.params = params
        self.optimizer = adam(params, lr=c["lr"], betas=tuple(c["betas"]),
                              weight_decay=c["weight_decay"], decoupled=True)

        # progress state (everything below goes into checkpoints)
        self.epoch = 0              # completed epochs
        self.sample_in_epoch = 0    # samples of this rank's shard consumed in the current epoch
        self.step = 0               # optimizer steps taken
        self.batches = 0            # batches consumed (the lr schedule's clock)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.epochs_since_best = 0
        self.skipped = 0
        self.restores = 0
        self.consecutive_bad = 0
        self.lr_scale = 1.0
        self.wall_before = 0.0
        self.ep_loss_sum = 0.0
        self.ep_loss_n = 0
        self.ep_skipped = 0
        self.history: list[dict[str, Any]] = []
        self.top: list[dict[str, Any]] = []  # keep_best: [{epoch, loss, file}], best first
        self.resumed_from: str | None = None
        self.last_lr = c["lr"]
        self.t0 = time.perf_counter()

    # ---------------------------------------------------------------- state
    def _scheduler_state(self) -> dict[str, Any]:
        s = self.schedule
        return {"kind": s.kind, "lr_scale": self.lr_scale, "total_steps": s.total_steps,
                "base_lr": s.lr}

    def _state(self) -> dict[str, Any]:
        """The checkpoint dict (collective in DDP: RNG states are gathered from all ranks)."""
        rng = D.gather_objects(get_rng_state(), self.ctx)
        return {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self._scheduler_state(),
            "epoch": self.epoch,
            "sample_in_epoch": self.sample_in_epoch,
            "step": self.step,
            "batches": self.batches,
            "batch_size": self.bs,
            "world_size": self.ctx.world_size,
            "seed": self.c["seed"],
            "rng": rng,
            "best_val_loss": self.best,
            "best_epoch": self.best_epoch,
            "monitor": self.monitor,
            "counters": {
                "skipped_batches": self.skipped,
                "restores": self.restores,
                "consecutive_nonfinite": self.consecutive_bad,
                "epochs_since_best": self.epochs_since_best,
                "wall_s": self.wall_s(),
                "epoch_loss_sum": self.ep_loss_sum,
                "epoch_loss_count": self.ep_loss_n,
                "epoch_skipped": self.ep_skipped,
            },
            "config": self.run_config,
            "trainer_config": to_plain(self.c),
            "history": list(self.history),
            "top": list(self.top),
        }

    def wall_s(self) -> float:
        return self.wall_before + (time.perf_counter() - self.t0)

    def save_last(self, also_best: bool = False, write_last: bool = True) -> None:
        state = self._state()
        if self.ctx.is_main:
            if write_last:
                save_checkpoint(state, self.last_path)
                if also_best:
                    copy_atomic(self.last_path, self.best_path)
            elif also_best:
                save_checkpoint(state, self.best_path)
        D.barrier(self.ctx)

    def resume(self) -> None:
        """Load ``checkpoints/last.pt`` into model/optimizer/counters/RNG, if present."""
        seen = int(D.all_reduce([float(self.last_path.is_file())], self.ctx)[0])
        if seen == 0:
            self.progress.message(f"resume: no checkpoint at {self.last_path}; starting fresh")
            return
        if seen != self.ctx.world_size:  # run_dir must be on a file system all ranks share
            raise TrainingError(f"cannot resume: {self.last_path} is visible to {seen} of "
                                f"{self.ctx.world_size} ranks; use a shared run directory")
        ck = load_checkpoint(self.last_path, map_location="cpu")
        try:
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TrainingError(
                f"cannot resume from {self.last_path}: model/optimizer do not match ({first})"
            ) from err
        cnt = ck["counters"]
        self.epoch, self.step = int(ck["epoch"]), int(ck["step"])
        self.batches = int(ck.get("batches", self.step))  # older checkpoints: one batch per step
        self.sample_in_epoch = int(ck["sample_in_epoch"])
        self.best, self.best_epoch = ck["best_val_loss"], ck["best_epoch"]
        self.epochs_since_best = int(cnt["epochs_since_best"])
        self.skipped, self.restores = int(cnt["skipped_batches"]), int(cnt["restores"])
        self.consecutive_bad = int(cnt["consecutive_nonfinite"])
        self.wall_before = float(cnt["wall_s"])
        self.ep_loss_sum, self.ep_loss_n = float(cnt["epoch_loss_sum"]), int(cnt["epoch_loss_count"])
        self.ep_skipped = int(cnt["epoch_skipped"])
        self.lr_scale = float(ck["scheduler"]["lr_scale"])
        self.history = list(ck["history"])
        self.top = [t for t in ck.get("top", []) if (self.top_dir / t["file"]).is_file()]
        same_world = int(ck["world_size"]) == self.ctx.world_size
        if self.sample_in_epoch and (not same_world or int(ck["seed"]) != self.c["seed"]):
            self.progress.message("resume: world size or seed changed; restarting the epoch")
            self.sample_in_epoch = 0
        rng = ck["rng"]
        if same_world and len(rng) > self.ctx.rank:
            set_rng_state(rng[self.ctx.rank])
        else:
            seed_everything(self.c["seed"] + 7919 * self.ctx.rank + self.epoch)
        self.resumed_from = str(self.last_path)
        if self.ctx.is_main:  # metrics.jsonl mirrors the checkpoint's history
            self._rewrite_metrics()
        where = f"epoch {self.epoch + 1}" + (
            f" (sample {self.sample_in_epoch} of {self.per_rank})" if self.sample_in_epoch else "")
        self.progress.message(f"resumed from {self.last_path} at step {self.step}, {where}")

    # ---------------------------------------------------------------- metrics
    def _rewrite_metrics(self) -> None:
        write_text(self.metrics_path, "".join(json.dumps(rec) + "\n" for rec in self.history))

    def _append_metrics(self, rec: dict[str, Any]) -> None:
        if self.ctx.is_main:
            with open(self.metrics_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")

    # ---------------------------------------------------------------- loop pieces
    def _to_device(self, batch: Any) -> tuple[Any, ...]:
        nb = self.device.type == "cuda"
        return tuple(t.to(self.device, non_blocking=nb) if isinstance(t, torch.Tensor) else t
                     for t in _as_tuple(batch))

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.use_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _snapshot(self) -> None:
        self.good = {"model": _clone_cpu(self.model.state_dict()),
                     "optimizer": _clone_cpu(self.optimizer.state_dict())}

    def _restore(self) -> None:
        nf = self.c["nonfinite"]
        if self.restores >= nf["max_restores"]:
            raise TrainingError(
                f"training diverged: {nf['max_consecutive']} consecutive non-finite batches after "
                f"{self.restores} restore(s) (lr scaled by {self.lr_scale:g}, step {self.step}); "
                "try a lower trainer.lr or set trainer.grad_clip"
            )
        self.model.load_state_dict(self.good["model"])
        self.optimizer.load_state_dict(copy.deepcopy(self.good["optimizer"]))
        self.restores += 1
        self.lr_scale *= 0.5
        self.consecutive_bad = 0
        self.progress.message(
            f"warning: {nf['max_consecutive']} consecutive non-finite batches at step {self.step}; "
            f"restored last good state, lr scale now {self.lr_scale:g} "
            f"(restore {self.restores}/{nf['max_restores']})"
        )

    def _stop_reason(self) -> str | None:
        c = self.c
        if c["max_steps"] is not None and self.step >= c["max_steps"]:
            return "max_steps"
        if c["epochs"] is not None and self.epoch >= c["epochs"]:
            return "epochs"
        if c["patience"] is not None and self.epochs_since_best >= c["patience"]:
            return "early_stopping"
        return None

    def _interrupt(self, signum: int) -> None:
        self.progress.end_epoch()
        self.progress.message(f"received {signal.Signals(signum).name}: saving {self.last_path}")
        self.save_last()
        raise TrainingInterrupted(signum, str(self.last_path))

    def _batches(self) -> Iterator[Any]:
        self.sampler.set_position(self.epoch, self.sample_in_epoch)
        self.loader_gen.manual_seed(self.c["seed"] * 1000003 + self.epoch)
        yield from self.loader

    def _train_epoch(self, wrapped: torch.nn.Module) -> bool:
        """Run the rest of the current epoch; returns True if cut short by max_steps.

        With ``grad_accum`` K > 1 the gradients of K batches (each loss scaled by 1/K) are summed
        before one optimizer step; the epoch's last group may be shorter (its gradient is
        rescaled to the mean over its batches). A group with a non-finite loss or gradient is
        skipped as a whole; SIGTERM/SIGINT is acted on at the next group boundary, so a
        checkpoint never holds half a group.
        """
        c, nf = self.c, self.c["nonfinite"]
        k = accum_at(c["grad_accum"], self.epoch)
        done = self.sample_in_epoch // self.bs
        total = self.steps_per_epoch
        desc = f"epoch {self.epoch + 1}" + (f"/{c['epochs']}" if c["epochs"] else "")
        self.progress.start_epoch(desc, math.ceil(total / k), math.ceil(done / k), self.step)
        self.model.train()
        pos, losses, sizes = 0, [], []
        for batch in self._batches():
            batch = self._to_device(batch)
            n = int(batch[0].shape[0]) if isinstance(batch[0], torch.Tensor) else self.bs
            if pos == 0:
                lr = self.schedule.lr_at(self.batches) * self.lr_scale
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer.zero_grad(set_to_none=True)
            last_in_epoch = self.sample_in_epoch + n >= self.per_rank
            boundary = pos + 1 == k or last_in_epoch
            sync = contextlib.nullcontext() if boundary or not hasattr(wrapped, "no_sync") \
                else wrapped.no_sync()  # DDP: all-reduce once per group
            with sync:
                with self._autocast():
                    loss = wrapped(*batch)
                if loss.dim() != 0:
                    raise TrainingError(
                        f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
                (loss / k if k > 1 else loss).backward()
            losses.append(loss.detach().float())
            sizes.append(n)
            pos += 1
            self.sample_in_epoch += n
            self.batches += 1
            if not boundary:
                continue
            if pos < k:  # short last group: the gradient is a mean over its pos batches
                for p in self.params:
                    if p.grad is not None:
                        p.grad.mul_(k / pos)
            if c["grad_clip"] is not None:
                norm = torch.nn.utils.clip_grad_norm_(self.params, c["grad_clip"])
            else:
                grads = [p.grad for p in self.params if p.grad is not None]
                norm = (torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(g.detach()) for g in grads])) if grads
                    else torch.zeros(()))
            *loss_vs, norm_v = torch.stack([*losses, norm.detach().float().to(
                losses[0].device)]).cpu().tolist()  # one device sync per optimizer step
            group_n = sum(sizes)
            mean_loss = sum(v * m for v, m in zip(loss_vs, sizes)) / group_n
            bad = not (math.isfinite(mean_loss) and math.isfinite(norm_v))
            flag_bad, flag_sig = D.all_reduce([float(bad), float(self.signals.signum)], self.ctx,
                                              op="max")
            if flag_bad:
                self.skipped += 1
                self.ep_skipped += 1
                self.consecutive_bad += 1
                self.optimizer.zero_grad(set_to_none=True)
                if self.consecutive_bad >= nf["max_consecutive"]:
                    self._restore()
            else:
                self.optimizer.step()
                self.step += 1
                self.consecutive_bad = 0
                self.ep_loss_sum += mean_loss * group_n
                self.ep_loss_n += group_n
                self.last_lr = lr
            pos, losses, sizes = 0, [], []
            self.progress.update(self.step, mean_loss, lr)
            if flag_sig:
                self._interrupt(int(flag_sig))
            if c["max_steps"] is not None and self.step >= c["max_steps"]:
                return self.sample_in_epoch < self.per_rank
        return False

    @torch.no_grad()
    def _validate(self) -> float | None:
        if self.val_loader is None:
            return None
        was_training = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        try:
            for batch in self.val_loader:
                batch = self._to_device(batch)
                with self._autocast():
                    loss = self.loss_fn(self.model, batch)
                n = int(batch[0].shape[0])
                total += float(loss.float()) * n
                count += n
        finally:
            self.model.train(was_training)
        total, count = D.all_reduce([total, float(count)], self.ctx)
        return total / count if count else None

    def _end_epoch(self, partial: bool, ep_t0: float) -> None:
        s, n = D.all_reduce([self.ep_loss_sum, float(self.ep_loss_n)], self.ctx)
        train_loss = s / n if n else float("nan")
        val_loss = self._validate()
        monitored = val_loss if self.monitor == "val_loss" else train_loss
        number = self.epoch + 1
        improved = _finite(monitored) and (self.best is None or monitored < self.best) \
            and self._weights_finite()
        if improved:
            self.best, self.best_epoch, self.epochs_since_best = monitored, number, 0
        else:
            self.epochs_since_best += 1
        rec = {
            "epoch": number, "step": self.step, "train_loss": _json_num(train_loss),
            "val_loss": _json_num(val_loss), "lr": self.last_lr,
            "wall_s": round(self.wall_s(), 3), "epoch_s": round(time.perf_counter() - ep_t0, 3),
            "skipped_batches": self.skipped, "epoch_skipped_batches": self.ep_skipped,
            "restores": self.restores, "best_val_loss": _json_num(self.best),
        }
        self.history.append(rec)
        if not partial:
            self.epoch += 1
            self.sample_in_epoch = 0
        self.ep_loss_sum, self.ep_loss_n, self.ep_skipped = 0.0, 0, 0
        if _finite(monitored) and self.consecutive_bad == 0:
            self._snapshot()
        final = partial or self._stop_reason() is not None
        write_last = self.c["checkpoint_every_epoch"] or final or bool(self.signals.signum)
        dropped = self._keep_top(number, monitored) if not partial else []
        if write_last or improved or dropped is not None:
            self.save_last(also_best=improved, write_last=write_last or dropped is not None)
        self._prune_top(dropped or [])
        self._append_metrics(rec)
        self.progress.end_epoch()
        val_txt = f" val {val_loss:.5g}" if val_loss is not None else ""
        self.progress.message(
            f"epoch {number}: train {train_loss:.5g}{val_txt}{' *' if improved else ''} "
            f"lr {self.last_lr:.3g} step {self.step} skipped {self.skipped} "
            f"({rec['epoch_s']:.1f} s)"
        )

    def _weights_finite(self) -> bool:
        """True when every parameter and buffer is finite (best.pt never holds NaN/inf)."""
        return all(bool(torch.isfinite(t).all()) for t in self.model.state_dict().values()
                   if t.is_floating_point())

    def _check_result(self) -> None:
        """A run that took no optimizer step, or never reached a finite monitored loss, fails."""
        ran = len(self.history) > self.history_at_start
        if self.step == 0 or (ran and self.step == self.step_at_start):
            raise TrainingError(
                f"no optimizer step was taken: all {self.skipped - self.skipped_at_start} "
                "batch(es) gave a non-finite "
                "loss or gradient; check the data (NaN/inf values, constant columns, too few "
                "rows) and trainer.lr")
        if self.best is None:
            raise TrainingError(
                f"no epoch reached a finite {self.monitor} with finite weights in {self.epoch} "
                f"epoch(s) ({self.skipped} non-finite batches skipped); no best.pt was written. "
                "Lower trainer.lr or set trainer.grad_clip")

    def _keep_top(self, number: int, loss: float | None) -> list[dict[str, Any]] | None:
        """keep_best: save this epoch's weights if it ranks among the best ``keep_best``.

        Returns the entries that fell out (their files are deleted only after last.pt, which
        lists the survivors, has been written), or None when this epoch was not kept."""
        k = self.c["keep_best"]
        if k <= 0 or not _finite(loss):
            return None
        if len(self.top) >= k and loss >= self.top[-1]["loss"]:
            return None
        entry = {"epoch": number, "loss": float(loss), "file": f"epoch_{number:05d}.pt"}
        if self.ctx.is_main:
            self.top_dir.mkdir(parents=True, exist_ok=True)
            save_checkpoint({"format_version": CHECKPOINT_FORMAT_VERSION,
                             "model": self.model.state_dict(), "epoch": number,
                             "loss": float(loss), "monitor": self.monitor},
                            self.top_dir / entry["file"])
        self.top = sorted([t for t in self.top if t["epoch"] != number] + [entry],
                          key=lambda t: t["loss"])
        dropped, self.top = self.top[k:], self.top[:k]
        return dropped

    def _prune_top(self, dropped: list[dict[str, Any]]) -> None:
        if not self.ctx.is_main:
            return
        for t in dropped:
            (self.top_dir / t["file"]).unlink(missing_ok=True)
        if self.c["keep_best"] > 0 and self.top_dir.is_dir():
            keep = {t["file"] for t in self.top}
            for f in self.top_dir.glob("epoch_*.pt"):  # leftovers of an interrupted epoch
                if f.name not in keep:
                    f.unlink(missing_ok=True)

    def run(self) -> dict[str, Any]:
        self.step_at_start, self.skipped_at_start = self.step, self.skipped
        self.history_at_start = len(self.history)
        wrapped = D.wrap(self.model, self.loss_fn, self.ctx, self.device)
        self._snapshot()
        stopped: str | None = None
        while True:
            # At an epoch boundary any stop condition applies; inside an epoch (resumed from a
            # mid-epoch checkpoint) only max_steps does. A checkpoint taken after the last
            # batch but before validation resumes with an empty remainder, then validates.
            if self.sample_in_epoch == 0:
                stopped = self._stop_reason()
                if stopped is not None:
                    break
            elif self.sample_in_epoch < self.per_rank and self._stop_reason() == "max_steps":
                stopped = "max_steps"
                break
            ep_t0 = time.perf_counter()
            partial = self._train_epoch(wrapped)
            self._end_epoch(partial, ep_t0)
            flag_sig = D.all_reduce([float(self.signals.signum)], self.ctx, op="max")[0]
            if flag_sig:
                self.progress.message(f"received {signal.Signals(int(flag_sig)).name} at the end "
                                      f"of epoch {self.epoch}; state saved to {self.last_path}")
                raise TrainingInterrupted(int(flag_sig), str(self.last_path))
            if partial:
                stopped = "max_steps"
                break
        self._check_result()
        last = self.history[-1] if self.history else {}
        summary = {
            "best_val_loss": self.best,
            "best_epoch": self.best_epoch,
            "monitor": self.monitor,
            "epochs": self.epoch,
            "steps": self.step,
            "skipped_batches": self.skipped,
            "restores": self.restores,
            "wall_s": round(self.wall_s(), 3),
            "stopped_reason": stopped,
            "train_loss": last.get("train_loss"),
            "val_loss": last.get("val_loss"),
            "lr": self.last_lr,
            "device": str(self.device),
            "world_size": self.ctx.world_size,
            "resumed_from": self.resumed_from,
            "last_checkpoint": str(self.last_path),
            "best_checkpoint": str(self.best_path) if self.best_epoch is not None else None,
            "top_epochs": [t["epoch"] for t in self.top],
        }
        self.progress.message(
            f"training done ({stopped}): {self.epoch} epochs, {self.step} steps, best "
            f"{self.monitor} {self.best if self.best is not None else float('nan'):.5g} at epoch "
            f"{self.best_epoch}, {summary['wall_s']:.1f} s"
        )
        return summary


def train(
    model: torch.nn.Module,
    loss_fn: LossFn,
    train_set: Dataset,
    val_set: Dataset | None,
    cfg: Mapping[str, Any],
    run_dir: str | Path,
    run_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` with AdamW.

    Args:
        model: any module; moved to ``resolve_device(cfg["device"])`` and trained in place.
        loss_fn: ``(model, batch) -> scalar`` mean loss (e.g. mean NLL in nats); ``batch`` is the
            tuple of tensors of one mini-batch (``[B, ...]`` each), already on the device.
        train_set / val_set: datasets whose items are tuples of tensors, e.g. ``(x,)`` or
            ``(x, context)``. The val loss is ``loss_fn`` under ``no_grad``/``eval``, averaged
            over the set weighted by batch size. Without a val set the train loss is monitored.
        cfg: the ``trainer`` config group as a plain mapping (see ``configs/trainer/default.yaml``).
        run_dir: ``checkpoints/{last,best}.pt`` and ``metrics.jsonl`` are written here (rank 0).
        run_config: the full resolved config, stored in checkpoints under ``"config"``.

    Returns:
        A summary dict: best_val_loss, best_epoch, monitor, epochs, steps, skipped_batches,
        restores, wall_s, stopped_reason (epochs | max_steps | early_stopping), train_loss,
        val_loss, lr, device, world_size, resumed_from, last_checkpoint, best_checkpoint.

    Raises:
        TrainingError: bad config, unusable device, unresumable checkpoint, or divergence.
        TrainingInterrupted: on SIGTERM/SIGINT, after ``last.pt`` was written (resume with
            ``resume=true``); ``exit_code`` is 143 or 130.
    """
    c = validate_config(cfg)
    device = resolve_device(c["device"])
    ctx = D.setup(device.type)
    ok = False
    try:
        if device.type == "cuda" and device.index is None:
            index = ctx.local_rank if ctx.enabled else torch.cuda.current_device()
            device = torch.device("cuda", index)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        run_dir = Path(run_dir)
        if ctx.is_main:
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        seed_everything(c["seed"] + 7919 * ctx.rank)
        model.to(device)
        with _StopSignals() as signals:
            run = _Run(model, loss_fn, train_set, val_set, c, run_dir, run_config, device, ctx,
                       signals)
            try:
                if c["resume"]:
                    run.resume()
                elif ctx.is_main and run.metrics_path.exists():
                    run.metrics_path.unlink()
                summary = run.run()
            finally:
                run.progress.close()
        ok = True
        return summary
    finally:
        if ok:
            D.teardown(ctx)
        elif ctx.created and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
