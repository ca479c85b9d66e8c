"""Signal region, sidebands and the train/val/test splits of a resonant anomaly search.

Rows are CATHODE feature rows ``[N, 6]`` = ``mjj, mj1, dmj, tau21j1, tau21j2, label``
(:data:`flowctl.data.lhco.FEATURES`; masses in TeV). The split follows CATHODE
(reference/anomaly.md §1.4):

* **data** (``data.path``): background with injected signal (``n_sig`` signal events are kept,
  the rest set aside). Its SR events train/validate the SR side of every weakly supervised
  method; its sideband events train/validate the background model (CATHODE, ANODE) and the
  adjacent strips are CWoLa's background proxy.
* **extra background** (``data.extra_bkg``, SR only) and **extra signal**
  (``data.extra_sig``): labelled simulation. A fixed fraction forms the **test set**, the same
  for every method and seed; the rest trains the idealized detector (perfect background) and
  the fully supervised reference.

The split seed (``split_seed``) is fixed across runs, so seeds vary only the training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowctl.data.lhco import SR, load_lhco, sideband_mask, signal_region_mask
from flowctl.data.table import DataError

__all__ = ["DATA_DEFAULTS", "AnomalySplits", "data_signature", "load_splits"]

DATA_DEFAULTS: dict[str, Any] = {
    "path": None,            # LHCO R&D features file (background + injected signal)
    "key": None,             # pandas key inside it (null: the only frame)
    "extra_bkg": None,       # SR-only extra QCD (test set; idealized AD, supervised)
    "extra_sig": None,       # extra signal (test set; supervised)
    "shift": 0.0,            # CATHODE --datashift: mj1 += shift*mjj, dmj += shift*mjj
    "n_sig": None,           # keep this many signal events of `path` (null: all it has)
    "sr": list(SR),          # signal region in mjj (TeV)
    "cwola_width": 0.2,      # CWoLa sideband strips next to the SR (TeV)
    "sb_val_fraction": 0.2,  # of the sideband events: validation of the background flow
    "sr_val_fraction": 0.5,  # of the SR data: classifier validation (CATHODE: 60k / 60k)
    "test_fraction": 0.5,    # of the extra SR events: the test set (rest: IAD / supervised)
    "max_events": None,      # read only this many events of `path` (after shuffling)
    "max_sb_events": None,   # cap on sideband events for the background flow (train + val)
    "split_seed": 0,         # shuffling and splits; fixed across runs
}


@dataclass
class AnomalySplits:
    """Feature rows ``[N, 6]`` (float64) of every set a method may need."""

    sb_train: np.ndarray
    sb_val: np.ndarray
    sr_train: np.ndarray
    sr_val: np.ndarray
    cwola_train: np.ndarray          # adjacent sideband strips (CWoLa's "background")
    cwola_val: np.ndarray
    test: np.ndarray | None = None   # labelled SR events, independent of all training
    bkg_train: np.ndarray | None = None   # extra SR background for the idealized AD
    bkg_val: np.ndarray | None = None
    sig_train: np.ndarray | None = None   # extra SR signal for the supervised reference
    sig_val: np.ndarray | None = None
    sr: tuple[float, float] = SR
    info: dict[str, Any] = field(default_factory=dict)
    sr_index: np.ndarray | None = None    # [n_sr] row in data.path of each sr_data row
    sb_all: np.ndarray | None = None      # every sideband event (no max_sb_events cap)

    @property
    def sr_data(self) -> np.ndarray:
        """All SR data rows ``[n_sr, 6]``: ``sr_train`` then ``sr_val``."""
        return np.concatenate([self.sr_train, self.sr_val])

    def need(self, *names: str) -> None:
        """Raise :class:`DataError` naming the missing config key if a set is absent."""
        keys = {"test": "data.extra_bkg and data.extra_sig", "bkg_train": "data.extra_bkg",
                "bkg_val": "data.extra_bkg", "sig_train": "data.extra_sig",
                "sig_val": "data.extra_sig"}
        for n in names:
            if getattr(self, n) is None:
                raise DataError(f"this method needs labelled simulation: set {keys[n]}=FILE "
                                "(the synthetic ones are written by `make data`)")


def _cut(x: np.ndarray, frac: float) -> tuple[np.ndarray, np.ndarray]:
    k = round(len(x) * (1.0 - frac))
    return x[:k], x[k:]


def _read(path: Any, key: Any, shift: float, what: str) -> np.ndarray:
    if not path:
        raise DataError(f"data.{what} is required: pass data.{what}=FILE")
    p = Path(str(path))
    if not p.exists():
        raise DataError(f"{p}: no such file (data.{what})")
    return load_lhco(p, key=key, shift=float(shift))


def _check(d: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(d) - set(DATA_DEFAULTS))
    if unknown:
        raise DataError(f"unknown data key(s) {', '.join(unknown)}; valid: "
                        f"{', '.join(DATA_DEFAULTS)}")
    c = {**DATA_DEFAULTS, **dict(d)}
    sr = c["sr"]
    if (not isinstance(sr, Sequence) or len(sr) != 2 or not float(sr[0]) < float(sr[1])):
        raise DataError(f"data.sr must be [low, high] in TeV with low < high, got {sr!r}")
    for k in ("sb_val_fraction", "sr_val_fraction", "test_fraction"):
        if not 0.0 < float(c[k]) < 1.0:
            raise DataError(f"data.{k} must be in (0, 1), got {c[k]!r}")
    if c["n_sig"] is not None and int(c["n_sig"]) < 0:
        raise DataError(f"data.n_sig must be >= 0 or null, got {c['n_sig']!r}")
    return c


def data_signature(d: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two runs comparable (same events, same SR): resolved paths, shift, n_sig,
    SR and split seed."""
    c = {**DATA_DEFAULTS, **dict(d)}

    def res(p: Any) -> str | None:
        return str(Path(str(p)).resolve()) if p else None

    return {"path": res(c["path"]), "extra_bkg": res(c["extra_bkg"]),
            "extra_sig": res(c["extra_sig"]), "shift": float(c["shift"]),
            "n_sig": c["n_sig"], "sr": [float(v) for v in c["sr"]],
            "max_events": c["max_events"], "split_seed": int(c["split_seed"])}
    # max_sb_events only changes the background flow's training set, not the SR or test set


def load_splits(d: Mapping[str, Any], need_test: bool = False) -> AnomalySplits:
    """Read the files named in the ``data`` config and cut them into :class:`AnomalySplits`."""
    c = _check(d)
    sr = (float(c["sr"][0]), float(c["sr"][1]))
    rng = np.random.default_rng(int(c["split_seed"]))
    x = _read(c["path"], c["key"], c["shift"], "path")
    idx = rng.permutation(len(x))           # the real file is sorted by label
    x = x[idx]                              # idx: each row's position in the file
    is_sig = x[:, 5] == 1
    leftover_sig = np.zeros((0, 6))
    if c["n_sig"] is not None and int(c["n_sig"]) < int(is_sig.sum()):
        keep = np.flatnonzero(is_sig)[: int(c["n_sig"])]
        drop = np.setdiff1d(np.flatnonzero(is_sig), keep)
        leftover_sig = x[drop]
        x = np.delete(x, drop, axis=0)
        idx = np.delete(idx, drop)
    if c["max_events"] is not None:
        x, idx = x[: int(c["max_events"])], idx[: int(c["max_events"])]
    in_sr = signal_region_mask(x[:, 0], sr)
    in_sb = sideband_mask(x[:, 0], sr)
    strips = sideband_mask(x[:, 0], sr, width=float(c["cwola_width"]))
    sb = x[in_sb]
    if c["max_sb_events"] is not None:
        sb = sb[: int(c["max_sb_events"])]
    sb_train, sb_val = _cut(sb, float(c["sb_val_fraction"]))
    sr_train, sr_val = _cut(x[in_sr], float(c["sr_val_fraction"]))
    cw_train, cw_val = _cut(x[strips], float(c["sr_val_fraction"]))
    if len(sr_train) < 2 or len(sb_train) < 2:
        raise DataError(f"{c['path']}: {int(in_sr.sum())} events in the SR {sr} and "
                        f"{int(in_sb.sum())} in the sidebands; need at least a few of each")
    s_sr = int(x[in_sr, 5].sum())
    b_sr = int(in_sr.sum()) - s_sr
    info: dict[str, Any] = {
        "n_events": len(x), "n_signal": int(x[:, 5].sum()), "n_sr": int(in_sr.sum()),
        "n_sb": int(in_sb.sum()), "n_cwola_sb": int(strips.sum()), "sr_signal": s_sr,
        "sr_background": b_sr, "sr_s_over_b": s_sr / max(b_sr, 1),
        "sr_s_over_sqrt_b": s_sr / max(b_sr, 1) ** 0.5,
    }
    out = AnomalySplits(sb_train, sb_val, sr_train, sr_val, cw_train, cw_val, sr=sr, info=info,
                        sr_index=idx[in_sr], sb_all=x[in_sb])

    frac = float(c["test_fraction"])
    bkg = sig = None
    if c["extra_bkg"]:
        bkg = _read(c["extra_bkg"], None, c["shift"], "extra_bkg")
        bkg = bkg[signal_region_mask(bkg[:, 0], sr) & (bkg[:, 5] == 0)]
        bkg = bkg[rng.permutation(len(bkg))]
    if c["extra_sig"]:
        sig = _read(c["extra_sig"], None, c["shift"], "extra_sig")
    elif len(leftover_sig):
        sig = leftover_sig           # the real file's signal beyond n_sig
    if sig is not None:
        sig = sig[signal_region_mask(sig[:, 0], sr) & (sig[:, 5] == 1)]
        sig = sig[rng.permutation(len(sig))]
    if bkg is not None and sig is not None:
        if len(bkg) < 2 or len(sig) < 2:
            raise DataError(f"the extra files hold {len(bkg)} background and {len(sig)} signal "
                            f"events in the SR {sr}; need more for a test set")
        tr_b, te_b = _cut(bkg, frac)
        tr_s, te_s = _cut(sig, frac)
        out.test = np.concatenate([te_b, te_s])
        out.bkg_train, out.bkg_val = _cut(tr_b, 0.5)
        out.sig_train, out.sig_val = _cut(tr_s, 0.5)
        info.update({"n_test_background": len(te_b), "n_test_signal": len(te_s)})
    elif bkg is not None:
        out.bkg_train, out.bkg_val = _cut(_cut(bkg, frac)[0], 0.5)
    if need_test:
        out.need("test")
    return out
