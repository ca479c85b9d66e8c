"""Run under torchrun with 2 CPU processes (gloo): ``_ddp_script.py OUT_DIR``.

Each rank trains the same model (initialised differently per rank, so DDP's broadcast must
align them) into its own run dir OUT_DIR/run_rank{r}; only rank 0 may write there. Each rank
writes OUT_DIR/hash_rank{r}.txt and OUT_DIR/summary_rank{r}.json.
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
    model = make_model(seed=rank, dropout=0.0)
    c = cfg(epochs=2, schedule="cosine", warmup_steps=2, batch_size=32, log_every=2)
    summary = train(model, mse, make_data(), make_data(50, seed=9), c, out / f"run_rank{rank}")
    (out / f"hash_rank{rank}.txt").write_text(weights_hash(model))
    torch.save(model.state_dict(), out / f"weights_rank{rank}.pt")
    (out / f"summary_rank{rank}.json").write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
