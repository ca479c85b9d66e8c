"""Run under torchrun with 2 CPU processes (gloo): ``_ddp_script.py OUT_DIR``.

Phase A: each rank trains 2 epochs into its own run dir OUT_DIR/run_rank{r} (only rank 0 may
write); the model is initialised differently per rank, so DDP's broadcast must align it.
Phase B: the same run in one shared dir OUT_DIR/shared, stopped by max_steps after 1 epoch
(a step schedule does not depend on the horizon), then resume=True to 2 epochs.
Each phase creates and destroys the process group inside ``train``. Each rank writes
OUT_DIR/hash_rank{r}.txt, OUT_DIR/hash_resumed_rank{r}.txt, OUT_DIR/summary_rank{r}.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from _common import cfg, make_data, make_model, mse, weights_hash

from flowctl.training import train


def main() -> int:
    out = Path(sys.argv[1])
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    c = cfg(epochs=2, schedule="step", milestones=[5], gamma=0.5, warmup_steps=2, batch_size=32,
            log_every=2)

    model = make_model(seed=rank, dropout=0.0)
    summary = train(model, mse, make_data(), make_data(50, seed=9), c, out / f"run_rank{rank}")
    (out / f"hash_rank{rank}.txt").write_text(weights_hash(model))
    torch.save(model.state_dict(), out / f"weights_rank{rank}.pt")
    (out / f"summary_rank{rank}.json").write_text(json.dumps(summary))

    first = make_model(seed=rank, dropout=0.0)
    train(first, mse, make_data(), make_data(50, seed=9), {**c, "max_steps": 4}, out / "shared")
    resumed = make_model(seed=10 + rank, dropout=0.0)
    train(resumed, mse, make_data(), make_data(50, seed=9), {**c, "resume": True}, out / "shared")
    (out / f"hash_resumed_rank{rank}.txt").write_text(weights_hash(resumed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
