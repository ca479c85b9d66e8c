"""Where a distilled CaloFlow student departs from its teacher (used by calo_student.py).

* ``init_kl``: KL(student‖teacher) of an untrained student that starts from the teacher's
  conditioners, for both IAF maps: ``inverse`` (copied as they are) and ``forward`` (mirrored
  knots), on ``n`` student samples with the test split's contexts.
* ``same_z``: teacher and student sample from the same latent ``z`` and contexts; per
  calorimeter layer, the fraction of voxels that one of them leaves empty (logit of the
  normalised voxel below ``EMPTY_LOGIT``, i.e. at the noise floor) and the other does not,
  plus both KL directions.

Units: KL in nats per shower (Flow II's preprocessed units); fractions of voxel instances.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowctl.apps import calo
from flowctl.apps.common import read_config
from flowctl.training.distill import DistillLoss, copy_permutations, init_from_teacher

#: logit of a normalised voxel at the noise floor: α = 1e-6 plus U[0, 1 keV) noise sits at
#: about -13.8; 10 keV in a 10 GeV layer is at -13.1
EMPTY_LOGIT = -13.0


@functools.lru_cache(maxsize=2)
def _setup(teacher_dir: Path, n: int) -> tuple[Any, list[int] | None, torch.Tensor,
                                                 dict[str, Any], list[slice]]:
    """(teacher, the flow's layer sizes, test contexts [n, C], teacher config, the voxel
    slice of every calorimeter layer); loaded once per teacher and ``n`` (read-only use)."""
    tcfg = read_config(teacher_dir)
    sizes = calo._layer_sizes(tcfg, teacher_dir)
    teacher = calo._load(teacher_dir, dict(tcfg["flow"]), sizes).eval()
    _, test = calo.load_data(tcfg["data"], calo.geometry(tcfg, teacher_dir))
    noise, scale, e_ref = calo._pre(tcfg)
    ctx = calo.prepare(test, noise, 1, scale, e_ref).ctx[:n]
    return (teacher, sizes, torch.from_numpy(np.ascontiguousarray(ctx)), tcfg,
            list(test.layer_slices))


@torch.no_grad()
def init_kl(teacher_dir: Path, n: int = 1000, seed: int = 0) -> dict[str, float]:
    teacher, sizes, ctx, tcfg, _ = _setup(teacher_dir, n)
    loss = DistillLoss(teacher)
    out = {}
    for iaf_map in ("inverse", "forward"):
        student = calo._build({**tcfg["flow"], "kind": "iaf", "iaf_map": iaf_map}, sizes)
        copy_permutations(teacher, student)
        init_from_teacher(teacher, student)
        torch.manual_seed(seed)
        out[iaf_map] = round(float(loss.kl(student.eval(), len(ctx), ctx)), 2)
    return out


@torch.no_grad()
def same_z(teacher_dir: Path, student_dir: Path, n: int = 3000, seed: int = 0
           ) -> dict[str, Any]:
    teacher, sizes, ctx, _, slices = _setup(teacher_dir, n)
    student = calo._load(student_dir, dict(read_config(student_dir)["flow"]), sizes).eval()
    torch.manual_seed(seed)
    z = torch.randn(len(ctx), teacher.features)
    x_t, _ = teacher.transform.inverse(z, ctx)
    x_s, _ = student.transform.inverse(z, ctx)
    pre = teacher.transform.transforms[0]  # the logit preprocessing layer
    l_t, l_s = pre(x_t, ctx)[0], pre(x_s, ctx)[0]
    out: dict[str, Any] = {
        "kl_student_teacher": round(float((student.log_prob(x_s, ctx)
                                           - teacher.log_prob(x_s, ctx)).mean()), 2),
        "kl_teacher_student": round(float((teacher.log_prob(x_t, ctx)
                                           - student.log_prob(x_t, ctx)).mean()), 2),
        "layers": {}}
    for i, sl in enumerate(slices):
        e_t, e_s = l_t[:, sl] < EMPTY_LOGIT, l_s[:, sl] < EMPTY_LOGIT
        out["layers"][str(i)] = {
            "empty_teacher": round(float(e_t.float().mean()), 4),
            "empty_student": round(float(e_s.float().mean()), 4),
            "teacher_empty_student_not": round(float((e_t & ~e_s).float().mean()), 4),
            "student_empty_teacher_not": round(float((e_s & ~e_t).float().mean()), 4)}
    return out


def nonzero_fractions(teacher_dir: Path, run_dirs: list[Path], threshold_mev: float = 0.01
                      ) -> dict[str, list[float]]:
    """Per calorimeter layer, the fraction of voxels at or above ``threshold_mev`` (CaloFlow's
    10 keV, applied to both sets by ``evaluate``) in the test split ("truth") and in each
    run's ``samples.h5`` (the showers ``evaluate`` generated)."""
    from flowctl.data.calo import read_showers

    tcfg = read_config(teacher_dir)
    _, test = calo.load_data(tcfg["data"], calo.geometry(tcfg, teacher_dir))
    sets: dict[str, Any] = {"truth": test}
    for run in run_dirs:
        if (run / "samples.h5").exists():
            sets[run.name] = read_showers(run / "samples.h5", "auto", None)
    return {name: [round(float((s.voxels[:, sl] >= threshold_mev).mean()), 4)
                   for sl in s.layer_slices] for name, s in sets.items()}
