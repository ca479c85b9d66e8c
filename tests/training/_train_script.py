"""Subprocess helper for the SIGTERM test: ``python _train_script.py RUN_DIR MODE``.

MODE: ``straight`` (plain run), ``slow`` (sleeps per batch so it can be killed mid-run),
``resume`` (resume=True). Writes RUN_DIR/hash.txt with the final weights' hash; exits with
TrainingInterrupted.exit_code when interrupted.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from _common import cfg, make_data, make_model, mse, weights_hash

from flowctl.training import TrainingInterrupted, train


def main() -> int:
    run_dir, mode = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)

    def loss_fn(model, batch):
        if mode == "slow" and model.training:
            time.sleep(0.05)
        return mse(model, batch)

    model = make_model()
    c = cfg(epochs=4, schedule="cosine", warmup_steps=3, log_every=1, resume=mode == "resume")
    try:
        train(model, loss_fn, make_data(), make_data(48, seed=9), c, run_dir)
    except TrainingInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return err.exit_code
    (run_dir / "hash.txt").write_text(weights_hash(model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
