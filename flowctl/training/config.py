"""Defaults and validation of the ``trainer`` config group (a plain mapping).

``validate_config(cfg)`` fills in defaults and checks every key; an unknown key or a value of
the wrong type raises :class:`ConfigError` (a :class:`TrainingError`) naming the key, the value and what was expected.
The defaults here mirror ``configs/trainer/default.yaml`` (a test keeps them in sync).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import ConfigError

SCHEDULES = ("constant", "cosine", "onecycle", "step")
OPTIMIZERS = ("adamw",)

DEFAULTS: dict[str, Any] = {
    "device": "auto",
    "bf16": False,
    "optimizer": "adamw",
    "lr": 1.0e-3,
    "weight_decay": 0.0,
    "betas": [0.9, 0.999],
    "batch_size": 256,
    "epochs": 100,
    "max_steps": None,
    "schedule": "cosine",
    "warmup_steps": 0,
    "milestones": [],
    "gamma": 0.1,
    "min_lr": 0.0,
    "grad_clip": None,
    "patience": None,
    "seed": 0,
    "resume": False,
    "num_workers": 0,
    "log_every": 100,
    "nonfinite": {"max_consecutive": 5, "max_restores": 3},
    "checkpoint_every_epoch": True,
    "keep_best": 0,
    "grad_accum": None,
}

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(lo: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_int(v) and v >= lo), f"int >= {lo}"


def _opt_int(lo: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v is None or (_is_int(v) and v >= lo)), f"int >= {lo} or null"


def _float(lo: float, strict: bool) -> tuple[Callable[[Any], bool], str]:
    if strict:
        return (lambda v: _is_num(v) and v > lo), f"finite float > {lo:g}"
    return (lambda v: _is_num(v) and v >= lo), f"finite float >= {lo:g}"


def _choice(options: Sequence[str]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in options), "one of " + " | ".join(options)


def _bool() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, bool)), "bool"


def _seq(v: Any) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, (str, bytes))


def _accum_ok(v: Any) -> bool:
    if v is None:
        return True
    if _is_int(v):
        return v >= 1
    if not _seq(v) or not v:
        return False
    pairs = [p for p in v if _seq(p) and len(p) == 2 and all(_is_int(x) for x in p)]
    if len(pairs) != len(v) or pairs[0][0] != 0:
        return False
    starts = [p[0] for p in pairs]
    return all(p[1] >= 1 for p in pairs) and all(a < b for a, b in itertools.pairwise(starts))


def accum_at(spec: int | Sequence[Sequence[int]] | None, epoch: int) -> int:
    """Batches per optimizer step in ``epoch`` (0-based) for a ``grad_accum`` setting.

    ``spec`` is None (1), an int K, or ``[[0, K0], [e1, K1], ...]``: K0 batches per step from epoch 0,
    K1 from epoch e1 on, ... (CaloFlow v2's student: ``[[0, 2], [10, 4], [40, 8], [70, 16]]``).

    >>> accum_at([[0, 2], [10, 4]], 9), accum_at([[0, 2], [10, 4]], 10), accum_at(3, 5)
    (2, 4, 3)
    """
    if spec is None:
        return 1
    if isinstance(spec, int):
        return spec
    k = 1
    for start, kk in spec:
        if epoch >= start:
            k = kk
    return int(k)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "device": (lambda v: isinstance(v, str) and bool(_DEVICE_RE.match(v)),
               "auto | cpu | cuda | cuda:N | mps"),
    "bf16": _bool(),
    "optimizer": _choice(OPTIMIZERS),
    "lr": _float(0.0, strict=True),
    "weight_decay": _float(0.0, strict=False),
    "betas": (lambda v: _seq(v) and len(v) == 2 and all(_is_num(b) and 0 <= b < 1 for b in v),
              "list of 2 floats in [0, 1)"),
    "batch_size": _int(1),
    "epochs": _opt_int(1),
    "max_steps": _opt_int(1),
    "schedule": _choice(SCHEDULES),
    "warmup_steps": _int(0),
    "milestones": (lambda v: _seq(v) and all(_is_int(m) and m >= 0 for m in v)
                   and list(v) == sorted(v), "ascending list of ints >= 0 (optimizer steps)"),
    "gamma": _float(0.0, strict=True),
    "min_lr": _float(0.0, strict=False),
    "grad_clip": ((lambda v: v is None or (_is_num(v) and v > 0)), "finite float > 0 or null"),
    "patience": _opt_int(1),
    "seed": _int(0),
    "resume": _bool(),
    "num_workers": _int(0),
    "log_every": _int(1),
    "checkpoint_every_epoch": _bool(),
    "keep_best": _int(0),
    "grad_accum": (_accum_ok, ("null, int >= 1, or a list of [start_epoch, K] pairs with K >= 1, "
                               "start epochs ascending from 0 (e.g. [[0, 2], [10, 4]])")),
}

_NONFINITE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_consecutive": _int(1),
    "max_restores": _int(0),
}


def _fail(key: str, value: Any, expected: str, prefix: str = "trainer") -> ConfigError:
    return ConfigError(f"invalid config: {prefix}.{key}={value!r} ({type(value).__name__}), "
                       f"expected {expected}")


def check_values(cfg: Mapping[str, Any], prefix: str = "trainer") -> None:
    """Check the known trainer keys present in ``cfg`` (unknown ones are left to the app).

    For a CLI-level check before any work: an app may keep extra keys in its trainer group
    (e.g. ``loss``), which :func:`validate_config` would refuse. Raises :class:`ConfigError`
    naming ``prefix.key``, the value and what was expected.
    """
    for key, value in cfg.items():
        if key == "nonfinite" and isinstance(value, Mapping):
            for sub, sval in value.items():
                if sub in _NONFINITE_CHECKS and not _NONFINITE_CHECKS[sub][0](sval):
                    raise _fail(f"nonfinite.{sub}", sval, _NONFINITE_CHECKS[sub][1], prefix)
        elif key in _CHECKS:
            check, expected = _CHECKS[key]
            if not check(value):
                raise _fail(key, value, expected, prefix)


def validate_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return a plain dict of all trainer keys: ``cfg`` on top of :data:`DEFAULTS`, checked.

    Raises :class:`ConfigError` on an unknown key or a value of the wrong type/range.
    """
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"invalid trainer config: expected a mapping, got {type(cfg).__name__}")
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for key, value in cfg.items():
        if key not in DEFAULTS:
            raise ConfigError(
                f"invalid trainer config: unknown key {key!r} (value {value!r}); "
                f"known keys: {', '.join(DEFAULTS)}"
            )
        if key == "nonfinite":
            if not isinstance(value, Mapping):
                raise _fail(key, value, "mapping with max_consecutive, max_restores")
            nf = dict(DEFAULTS["nonfinite"])
            for sub, sval in value.items():
                if sub not in _NONFINITE_CHECKS:
                    raise ConfigError(
                        f"invalid trainer config: unknown key 'nonfinite.{sub}' (value {sval!r}); "
                        f"known keys: {', '.join(_NONFINITE_CHECKS)}"
                    )
                check, expected = _NONFINITE_CHECKS[sub]
                if not check(sval):
                    raise _fail(f"nonfinite.{sub}", sval, expected)
                nf[sub] = sval
            out[key] = nf
            continue
        check, expected = _CHECKS[key]
        if not check(value):
            raise _fail(key, value, expected)
        if key == "grad_accum" and _seq(value):
            value = [[int(a), int(b)] for a, b in value]
        out[key] = list(value) if _seq(value) else value
    if out["epochs"] is None and out["max_steps"] is None:
        raise ConfigError("invalid trainer config: epochs and max_steps are both null; set one")
    for key in ("lr", "weight_decay", "gamma", "min_lr"):
        out[key] = float(out[key])
    out["betas"] = [float(b) for b in out["betas"]]
    if out["grad_clip"] is not None:
        out["grad_clip"] = float(out["grad_clip"])
    if out["min_lr"] > out["lr"]:
        raise _fail("min_lr", out["min_lr"], f"float <= lr ({out['lr']:g})")
    return out
