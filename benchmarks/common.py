"""Shared helpers of the side-by-side benchmarks: interleaved timing, parameter checks,
machine information, tables and JSON results.

Timings on shared machines drift; only ratios measured in one interleaved run count. The
helpers here therefore time every library once per repetition, in a rotating order, so that a
slow phase of the machine hits all libraries alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued kernels on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def interleaved_times(fns: Mapping[str, Callable[[], Any]], warmup: int, reps: int,
                      sync: Callable[[], None] = lambda: None,
                      cpu_times: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Run ``warmup + reps`` rounds; each round calls every function once, in an order rotated
    by one per round. Returns the ``reps`` measured wall times (seconds) per name.

    With ``cpu_times`` (a dict, filled in place) also the process CPU seconds of each call: on a
    machine shared with other jobs, and with one torch thread, this counts the work done rather
    than the time the scheduler gave to others (with several threads it includes their
    spin-waits)."""
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    if cpu_times is not None:
        cpu_times.update({name: [] for name in names})
    for it in range(warmup + reps):
        shift = it % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            cpu = time.process_time()
            start = time.perf_counter()
            fns[name]()
            sync()
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu
            if it >= warmup:
                times[name].append(elapsed)
                if cpu_times is not None:
                    cpu_times[name].append(cpu)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratios(times: Mapping[str, Sequence[float]], reference: str = "flowctl"
                  ) -> dict[str, float]:
    """Median over repetitions of ``reference / peer`` measured in the same repetition.

    Robust to a slow phase of the machine that spans several repetitions: each ratio compares
    calls made seconds apart."""
    ref = times[reference]
    return {f"{reference}/{name}": median([a / b for a, b in zip(ref, t)])
            for name, t in times.items() if name != reference}


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars (masks and other buffers excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_parameter_counts(workload: str, counts: Mapping[str, int], reference: str = "flowctl",
                           tolerance: float = 0.05) -> None:
    """Raise ``SystemExit`` when a library's count differs from ``reference`` by > tolerance."""
    ref = counts[reference]
    bad = {name: n for name, n in counts.items() if abs(n - ref) > tolerance * ref}
    if bad:
        listing = ", ".join(f"{name}={n:,}" for name, n in counts.items())
        raise SystemExit(f"{workload}: parameter counts differ by more than {tolerance:.0%} "
                         f"from {reference}: {listing}")


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device, versions: Mapping[str, str]) -> dict[str, Any]:
    """Torch version, threads, CPU, GPU and the given library versions."""
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "load_average_start": load_average(),
        **{f"{name}_version": v for name, v in versions.items()},
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def format_seconds(seconds: float | None) -> str:
    """Milliseconds below 10 s, seconds above; ``-`` for missing values."""
    if seconds is None:
        return "-"
    if seconds < 10.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.1f} s"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table with ``|`` separators, columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(header, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def results_path(prefix: str) -> Path:
    """``results/<prefix>-<timestamp>.json`` (the folder is created)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR / f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"


def load_average() -> float | None:
    """One-minute load average (None where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def save_results(path: Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically (temp file + rename); return ``path``."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path
