"""Write the toy data sets as HDF5 tables: ``python -m flowctl.data.make_toy --out data/toy``.

Each file ``<kind>.h5`` holds a dataset ``x`` of shape ``[n, D]`` (float32), readable with
``data=table data.path=data/toy/<kind>.h5``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from flowctl.data.toy import TOYS, make_toy


def write_toys(out: str | Path, n: int = 100000, seed: int = 0,
               kinds: list[str] | None = None) -> list[Path]:
    """Sample each toy and write ``out/<kind>.h5`` (dataset ``x``); returns the paths."""
    import h5py

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in kinds or list(TOYS):
        x = make_toy(kind).sample(n, np.random.default_rng(seed)).astype(np.float32)
        path = out / f"{kind}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=x)
            f.attrs["kind"] = kind
            f.attrs["seed"] = seed
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/toy")
    ap.add_argument("-n", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", nargs="*", default=None, choices=list(TOYS))
    a = ap.parse_args(argv)
    for p in write_toys(a.out, a.n, a.seed, a.kinds):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
