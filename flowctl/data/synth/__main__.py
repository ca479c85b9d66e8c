"""``python -m flowctl.data.synth --out data/calo [--n 100000] [--particles eplus gamma piplus]``

Writes ``OUT/{particle}.h5`` (CaloGAN format) and the CaloFlow 70/30 split
``OUT/{particle}_train.h5`` / ``OUT/{particle}_test.h5`` for each particle.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from flowctl.data.calo import read_calogan, split_showers, write_calogan
from flowctl.data.synth.calorimeter import PARTICLES, write


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flowctl.data.synth", description=__doc__)
    ap.add_argument("--out", default="data/calo", help="output folder (default data/calo)")
    ap.add_argument("--n", type=int, default=100_000, help="showers per particle")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--particles", nargs="+", default=list(PARTICLES), choices=PARTICLES)
    ap.add_argument("--train-fraction", type=float, default=0.7)
    args = ap.parse_args(argv)
    if args.n < 2:
        ap.error("--n must be at least 2")
    out = Path(args.out)
    for p in args.particles:
        t0 = time.perf_counter()
        path = write(out / f"{p}.h5", p, args.n, seed=args.seed)
        s = read_calogan(path)
        f = args.train_fraction
        train, test = split_showers(s, (f, 1.0 - f), seed=args.seed)
        write_calogan(out / f"{p}_train.h5", train, attrs={"particle": p, "split": "train"})
        write_calogan(out / f"{p}_test.h5", test, attrs={"particle": p, "split": "test"})
        print(f"{path}: {len(s)} showers ({len(train)} train / {len(test)} test) "
              f"in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
