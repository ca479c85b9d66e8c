"""The ``flowctl`` command line: ``flowctl COMMAND config=NAME [key=value ...]``.

argv is split into the subcommand, flowctl's own arguments (``config=``, ``run=``,
``run_dir=``) and everything else, which goes to Hydra's real application machinery (so
``--cfg job``, ``-m`` sweeps, ``--config-dir`` and launcher plugins work as in any Hydra app).
Overrides are checked first against the composed config, so that a typo or a wrong type is
reported as one clear line instead of a traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowctl.allocator import tune_malloc

__all__ = ["SUBCOMMANDS", "config_dirs", "list_configs", "main"]

PROG = "flowctl"

SUBCOMMANDS: dict[str, str] = {
    "train": "fit a flow to a config's data; writes checkpoints/, metrics.jsonl, plots/",
    "sample": "draw n=N samples from a trained run into RUN/samples.h5",
    "evaluate": "test NLL (+ s.e.), KL to exact densities, plots; data.path=FILE scores a table",
    "distill": "distil a trained teacher flow into a fast student (apps that support it)",
    "integrate": "train a flow as an importance sampler for an integrand (apps that support it)",
    "classify": "train/evaluate a classifier on a trained run's outputs (apps that support it)",
}
# Subcommands that act on an existing run directory (run=PATH, default: newest run).
RUN_COMMANDS = {"sample", "evaluate", "distill", "classify"}
# Of those, the ones that make a NEW run when given config=NAME without run=, reading their
# inputs from the config (e.g. `distill config=caloflow_student teacher=RUN`,
# `classify config=reweight truth=FILE generated=FILE`).
CONFIG_RUN_COMMANDS = {"distill", "classify"}
# Apps whose `classify` works inside the config's newest run instead (CATHODE's classifier
# step after `train` and `sample`).
IN_RUN_CLASSIFY_APPS = {"anomaly"}
# Data keys that may be added to a stored run config, e.g. ``evaluate run=D data.path=FILE``.
RUN_ADDABLE = ("data.path", "data.key", "data.columns", "data.delimiter", "energies")
GROUPS_HINT = "flow/, data/, trainer/"


class CLIError(Exception):
    """A user error found by the CLI itself (printed as one line, exit code 2)."""


def _debug() -> bool:
    return os.environ.get("FLOWCTL_DEBUG", "") not in ("", "0", "false", "False")


# --------------------------------------------------------------------------- config discovery


def shipped_config_dir() -> Path:
    """Folder of the shipped configs: ``flowctl/configs`` when installed, else ``configs/``."""
    here = Path(__file__).resolve().parent
    installed = here / "configs"
    if installed.is_dir() and any(installed.glob("*.yaml")):
        return installed
    return here.parent / "configs"


def config_dirs(user_dir: str | None = None) -> list[Path]:
    """Config folders in priority order (the user's ``--config-dir`` first)."""
    dirs = []
    if user_dir:
        dirs.append(Path(user_dir).expanduser().resolve())
    dirs.append(shipped_config_dir())
    return dirs


_DESC_RE = re.compile(r"^\s*#\s*description:\s*(.+?)\s*$", re.IGNORECASE)
_KEY_RE = re.compile(r"^description:\s*(.+?)\s*$")


def config_description(path: Path) -> str:
    """The ``# description:`` comment (or top-level ``description:`` key) of a config file."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        m = _DESC_RE.match(line) or _KEY_RE.match(line)
        if m:
            return m.group(1).strip().strip("'\"")
    return ""


def config_app(path: Path, configs: dict[str, Path], depth: int = 0) -> str | None:
    """The ``app`` of a config file, following its ``defaults`` list (None if not found)."""
    import yaml

    try:
        body = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(body, dict):
        return None
    if "app" in body or depth > 5:
        return body.get("app")
    for d in body.get("defaults") or []:
        if isinstance(d, str) and d in configs:
            app = config_app(configs[d], configs, depth + 1)
            if app is not None:
                return app
    return None


def list_configs(user_dir: str | None = None) -> dict[str, Path]:
    """Experiment configs (top-level ``NAME.yaml``) by name; the user's folder wins."""
    found: dict[str, Path] = {}
    for d in reversed(config_dirs(user_dir)):
        if d.is_dir():
            for p in sorted(d.glob("*.yaml")):
                found[p.stem] = p
    return dict(sorted(found.items()))


def group_options(group: str, user_dir: str | None = None) -> list[str]:
    """Options of a config group such as ``flow`` or ``data``."""
    opts: set[str] = set()
    for d in config_dirs(user_dir):
        g = d / group
        if g.is_dir():
            opts.update(p.stem for p in g.glob("*.yaml"))
    return sorted(opts)


# --------------------------------------------------------------------------- help


def help_text(user_dir: str | None = None) -> str:
    """The text of ``flowctl --help``."""
    out = [
        f"usage: {PROG} COMMAND config=NAME [key=value ...] [hydra options]",
        "",
        "Normalizing flows for particle physics and astronomy, driven by YAML configs.",
        "",
        "commands:",
    ]
    w = max(len(c) for c in SUBCOMMANDS)
    out += [f"  {c:<{w}}  {d}" for c, d in SUBCOMMANDS.items()]
    configs = list_configs(user_dir)
    out += ["", f"configs (config=NAME; shipped in {shipped_config_dir()}):"]
    if configs:
        w = max(len(c) for c in configs)
        out += [f"  {n:<{w}}  {config_description(p)}".rstrip() for n, p in configs.items()]
    else:
        out.append("  (none found)")
    out += [
        "",
        "arguments:",
        f"  config=NAME          compose configs/NAME.yaml with {GROUPS_HINT} and overrides",
        "  key=value            override any config key, e.g. flow.transforms=8 trainer.lr=1e-3",
        "  group=option         pick a group option, e.g. flow=maf_rqs data=moons trainer=tiny",
        "  run_dir=PATH         where `train` writes (default outputs/NAME/YYYY-mm-dd_HH-MM-SS)",
        "  run=PATH             the run that sample/evaluate/... read (default: newest finished",
        "                       run; distill/classify with config=NAME and no run= start a new run)",
        "  out=DIR              sample/evaluate write to DIR instead of the run (left untouched)",
        "  n=N                  number of samples for `sample`",
        "",
        "hydra options:",
        "  --cfg job            print the composed config and exit (--resolve to resolve it)",
        "  -m, --multirun       sweep comma-separated values: -m flow.transforms=4,8 seed=0,1",
        "  --config-dir DIR     add your own folder of configs (and groups) to the search path",
        "  hydra/launcher=submitit_slurm   run a sweep as Slurm jobs (extra: flowctl[slurm])",
        "",
        "examples:",
        f"  {PROG} train config=quickstart",
        f"  {PROG} sample config=quickstart n=100000",
        f"  {PROG} evaluate config=quickstart",
        f"  {PROG} evaluate run=outputs/density/2025-01-01_12-00-00 data.path=events.h5",
        "",
        "Set FLOWCTL_DEBUG=1 to see tracebacks of errors.",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- argv parsing

# Hydra flags that take a value, and those that do not.
_HYDRA_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-dir", "-cd",
                      "--config-name", "-cn", "--config-path", "-cp", "--experimental-rerun"}
_HYDRA_BOOL_FLAGS = {"--resolve", "-m", "--multirun", "--run", "-r", "--hydra-help",
                     "--version", "--shell-completion", "-sc"}


@dataclass
class Invocation:
    """A parsed command line."""

    command: str
    config: str | None = None
    run: str | None = None
    run_dir: str | None = None
    out: str | None = None
    config_dir: str | None = None
    multirun: bool = False
    show_only: bool = False  # --cfg / --info / --hydra-help: Hydra prints and exits
    flags: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)


def parse_argv(argv: Sequence[str]) -> Invocation:
    """Split argv into the subcommand, flowctl's own arguments, Hydra flags and overrides."""
    command, rest = argv[0], list(argv[1:])
    inv = Invocation(command=command)
    i = 0
    while i < len(rest):
        a = rest[i]
        flag, eq, val = a.partition("=")
        if a.startswith("-") and flag in _HYDRA_VALUE_FLAGS:
            if not eq:
                if i + 1 >= len(rest):
                    raise CLIError(f"option {a} needs a value")
                val = rest[i + 1]
                i += 1
            if flag in ("--config-dir", "-cd"):
                inv.config_dir = val
            elif flag in ("--config-name", "-cn", "--config-path", "-cp"):
                raise CLIError(f"use config=NAME instead of {flag} (and --config-dir DIR for "
                               "your own folder)")
            else:
                inv.flags += [flag, val]
                if flag in ("--cfg", "-c", "--info", "-i"):
                    inv.show_only = True
        elif a.startswith("-") and a in _HYDRA_BOOL_FLAGS:
            if a in ("-m", "--multirun"):
                inv.multirun = True
            else:
                if a in ("--hydra-help", "--version", "--shell-completion", "-sc"):
                    inv.show_only = True
                inv.flags.append(a)
        elif a.startswith("-"):
            raise CLIError(f"unknown option {a!r}; see `{PROG} --help`")
        elif flag == "config" and eq:
            inv.config = val
        elif flag == "run" and eq:
            inv.run = val
        elif flag == "run_dir" and eq:
            inv.run_dir = val
        elif flag == "out" and eq:
            inv.out = val
        else:
            if not eq and not a.startswith("~"):
                raise CLIError(f"argument {a!r} is not of the form key=value; see `{PROG} --help`")
            inv.overrides.append(a)
        i += 1
    if inv.multirun and inv.show_only and "--hydra-help" not in inv.flags:
        raise CLIError("--cfg/--info print one config and cannot be combined with -m; "
                       "drop -m and give single values")
    return inv


# --------------------------------------------------------------------------- run directories


def _runs_of(config: str, root: Path = Path("outputs")) -> list[Path]:
    base = root / config
    if not base.is_dir():
        return []
    runs = [p.parent for p in base.glob("*/config.yaml")] + \
           [p.parent for p in base.glob("*/*/config.yaml")]
    return runs


def newest_run(config: str, complete_only: bool = True) -> Path:
    """The most recently trained run of ``config`` under ``outputs/<config>/``.

    Only runs whose training finished (``RUN/.complete``) count, so a failed or interrupted
    run never shadows an older good one; ``complete_only=False`` (resume) takes any run.
    """
    from flowctl.rundir import is_complete

    runs = _runs_of(config)
    done = [r for r in runs if is_complete(r)] if complete_only else runs
    if not done:
        extra = ""
        if runs:
            extra = (f" ({len(runs)} unfinished run(s) there: failed or interrupted; resume one "
                     f"with trainer.resume=true run_dir=PATH or pass run=PATH)")
        raise CLIError(
            f"no finished run of config {config!r} under {Path('outputs') / config}{extra}; "
            f"train one with `{PROG} train config={config}` or pass run=PATH"
        )
    return max(done, key=lambda p: (p / "config.yaml").stat().st_mtime)


def default_run_dir(config: str) -> str:
    """``outputs/<config>/<timestamp>`` as a Hydra interpolation (the same for all ranks)."""
    return f"outputs/{config}/${{now:%Y-%m-%d_%H-%M-%S}}"


def _distributed_run_dir(config: str) -> str | None:
    """Under torchrun, rank 0 picks the timestamped run dir and shares it via the agent store."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from datetime import datetime, timedelta

    rank = int(os.environ.get("RANK", "0"))
    path = f"outputs/{config}/{datetime.now():%Y-%m-%d_%H-%M-%S}"
    key = f"flowctl/run_dir/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    try:
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
            raise RuntimeError("no agent store")
        from torch.distributed import TCPStore

        store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                         is_master=False, timeout=timedelta(seconds=60))
        if rank == 0:
            store.set(key, path)
            return path
        return store.get(key).decode()
    except (RuntimeError, KeyError, ValueError):
        # No agent store: rank 0 keeps its own dir; the others (which write nothing) get a
        # scratch dir so that Hydra creates no second run directory.
        return path if rank == 0 else tempfile.mkdtemp(prefix=f"flowctl-rank{rank}-")


# --------------------------------------------------------------------------- validation


def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    out: dict[str, Any] = {}
    if isinstance(cfg, DictConfig):
        for k in cfg:
            key = f"{prefix}{k}"
            node = cfg._get_node(k)
            try:
                v = cfg[k]
            except Exception:  # noqa: BLE001 - missing/broken interpolation: still a key
                v = None
            out[key] = v
            if isinstance(v, DictConfig) and not OmegaConf.is_missing(cfg, k) and node is not None:
                out.update(_flatten(v, key + "."))
    return out


def _type_name(v: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list",
            dict: "mapping"}.get(type(v), type(v).__name__)


def _check_type(key: str, default: Any, value: Any) -> None:
    from omegaconf import DictConfig, ListConfig

    if value is None or default is None:
        return
    if isinstance(default, ListConfig):
        default = list(default)
    if isinstance(default, DictConfig):
        default = {}
    ok = True
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    elif isinstance(default, str):
        ok = not isinstance(value, (list, dict))
    if not ok:
        raise CLIError(
            f"wrong type for {key}: got {value!r} ({_type_name(value)}), expected "
            f"{_type_name(default)} (current value {default!r})"
        )


def _sweep_values(o: Any) -> list[Any]:
    """Parsed values of an override (all choices of a simple sweep)."""
    from hydra.core.override_parser.types import ChoiceSweep

    v = o.value()
    if isinstance(v, ChoiceSweep):
        return list(v.list)
    if o.is_sweep_override():
        return []
    return [v]


def _first_value_override(o: Any) -> str:
    if not o.is_sweep_override():
        return o.input_line
    first = next(iter(o.sweep_string_iterator()))
    return f"{o.get_key_element()}={first}"


def _rephrase_composition(exc: Exception, inv: Invocation) -> str:
    msg = str(exc).strip()
    m = re.search(r"Could not find '([^']+)/([^']+)'", msg) or \
        re.search(r"Could not load '([^']+)/([^']+)'", msg)
    if m:
        group, opt = m.group(1), m.group(2)
        if group == "hydra/launcher" and opt.startswith("submitit"):
            return (f"launcher {opt!r} is not installed: pip install 'flowctl[slurm]' "
                    "(hydra-submitit-launcher)")
        opts = group_options(group, inv.config_dir)
        if not opts and group.startswith("hydra/"):
            from hydra.core.plugins import Plugins  # noqa: F401  (options come from plugins)
            return f"unknown option {opt!r} for {group}: {msg.splitlines()[0]}"
        close = difflib.get_close_matches(opt, opts, n=3, cutoff=0.4)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return f"unknown option {opt!r} for group {group}{hint}; available: {', '.join(opts)}"
    first = msg.splitlines()[0] if msg else type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        first += f" ({str(cause).strip().splitlines()[0]})"
    return f"config error: {first}"


def validate(inv: Invocation, primary_dir: Path, config_name: str,
             hydra_overrides: list[str]) -> None:
    """Compose the config with the overrides and check keys and types; raise CLIError."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        parsed = OverridesParser.create().parse_overrides(inv.overrides)
    except HydraException as exc:
        raise CLIError(f"cannot parse overrides: {str(exc).strip().splitlines()[0]}") from None

    search_path = create_config_search_path(str(primary_dir))
    if inv.config_dir:
        d = Path(inv.config_dir).expanduser().resolve()
        if not d.is_dir():
            raise CLIError(f"--config-dir {inv.config_dir}: no such directory")
        search_path.prepend("command-line", f"file://{d}")
    # Group selections (flow=maf_rqs, hydra/launcher=...) shape the config; values are checked.
    groups = {p.name for d in config_dirs(inv.config_dir) + [primary_dir] if d.is_dir()
              for p in d.iterdir() if p.is_dir()}
    group_ovr, value_ovr = [], []
    for o in parsed:
        key = o.key_or_group
        if "/" in key or key in groups or key.startswith("hydra"):
            group_ovr.append(o)
        else:
            value_ovr.append(o)
    mode = RunMode.MULTIRUN if inv.multirun else RunMode.RUN
    hydra_ovr = list(hydra_overrides)
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name=inv.command, config_search_path=search_path)
        try:
            base = hydra.compose_config(
                config_name, hydra_ovr + [_first_value_override(o) for o in group_ovr],
                run_mode=mode, with_log_configuration=False)
        except (HydraException, OmegaConfBaseException) as exc:
            raise CLIError(_rephrase_composition(exc, inv)) from None
        OmegaConf.set_struct(base, False)
        # items_ex(resolve=False) lists a missing value (`key: ???`) instead of raising on it
        base_nohydra = {k: v for k, v in base.items_ex(resolve=False) if k != "hydra"}
        flat = _flatten(OmegaConf.create(base_nohydra))
        for o in value_ovr:
            key = o.key_or_group
            if o.is_add() or o.is_force_add() or o.is_delete():
                continue
            if key not in flat:
                close = difflib.get_close_matches(key, list(flat), n=3, cutoff=0.6)
                if not close:
                    leaf = key.rsplit(".", 1)[-1]
                    close = [k for k in flat if k.rsplit(".", 1)[-1] == leaf][:3]
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                where = f"config {config_name!r}" if config_name != "config" else "the run's config"
                raise CLIError(f"unknown key {key!r} in {where}{hint}")
            for v in _sweep_values(o):
                _check_type(key, flat[key], v)
        try:
            full = hydra.compose_config(
                config_name, hydra_ovr + [_first_value_override(o) for o in parsed],
                run_mode=mode, with_log_configuration=False)
        except (HydraException, OmegaConfBaseException) as exc:
            raise CLIError(_rephrase_composition(exc, inv)) from None
        if not inv.show_only:
            _check_complete(full, inv)
    finally:
        GlobalHydra.instance().clear()


def _check_complete(cfg: Any, inv: Invocation) -> None:
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    body = OmegaConf.create({k: v for k, v in cfg.items() if k != "hydra"})
    try:
        OmegaConf.to_container(body, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or "a key"
        raise CLIError(f"{key} is required by config {inv.config!r}: pass {key}=VALUE") from None
    except OmegaConfBaseException as exc:
        raise CLIError(f"config error: {str(exc).strip().splitlines()[0]}") from None


_COUNT_RE = re.compile(r"^(n|seed|num_.+|n_.+|.+_n)$")


def check_config_values(body: dict[str, Any], prefix: str = "") -> None:
    """Range checks that hold for every app, before any work: every number finite; counts
    (``n``, ``n_*``, ``*_n``, ``num_*``, ``seed``) non-negative integers; the known keys of every
    ``trainer``/``*_trainer`` group as the trainer defines them. Raises CLIError naming the key."""
    import math

    from flowctl.training import ConfigError, check_values

    for key, value in body.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if key == "trainer" or str(key).endswith("_trainer"):
                try:
                    check_values(value, prefix=name)
                except ConfigError as exc:
                    raise CLIError(str(exc)) from None
            check_config_values(value, name + ".")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, float) and not math.isfinite(v):
                    raise CLIError(f"invalid config: {name}[{i}]={v!r} is not a finite number")
                if isinstance(v, dict):
                    check_config_values(v, f"{name}[{i}].")
        elif isinstance(value, float) and not math.isfinite(value):
            raise CLIError(f"invalid config: {name}={value!r} is not a finite number")
        elif (isinstance(value, int) and not isinstance(value, bool) and value < 0
              and _COUNT_RE.match(str(key))):
            raise CLIError(f"invalid config: {name}={value} must be >= 0 (a count)")


# --------------------------------------------------------------------------- the Hydra task


@dataclass
class _Job:
    command: str
    config: str | None
    run: Path | None  # existing run (RUN_COMMANDS)


def _run_task(job: _Job, cfg: Any) -> dict:
    """Body of the Hydra task: resolve the config and hand it to the application."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from flowctl.apps import load_app
    from flowctl.apps.common import write_config

    body = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert isinstance(body, dict)
    check_config_values(body)
    app = load_app(body.get("app"))
    commands: dict = getattr(app, "COMMANDS", {})
    if job.command not in commands:
        raise CLIError(
            f"app {body.get('app')!r} does not support `{job.command}`; it supports: "
            f"{', '.join(commands)}"
        )
    threads = body.get("cpu_threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))  # small flows run faster on one CPU thread
    from flowctl.apps.common import is_main_process

    if job.run is not None:
        run_dir = job.run
    else:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
    lock = _run_lock(run_dir, job.command) if is_main_process() else contextlib.nullcontext()
    with lock:
        if job.run is not None:
            return commands[job.command](body, run_dir)
        old_config = None
        if job.command == "train":
            resume = bool(body.get("trainer", {}).get("resume", False))
            if not resume and (run_dir / "checkpoints" / "last.pt").exists():
                raise CLIError(
                    f"run directory {run_dir} already holds a trained run; pass "
                    "trainer.resume=true to continue it or choose another run_dir"
                )
            if resume and (run_dir / "config.yaml").exists():
                _check_resume_compatible(run_dir, body)
                old_config = (run_dir / "config.yaml").read_bytes()
        try:
            write_config(run_dir, body)  # a new run: the directory alone describes it
            result = commands[job.command](body, run_dir)
        except BaseException:
            if old_config is not None and is_main_process():
                from flowctl.atomic import write_bytes

                write_bytes(run_dir / "config.yaml", old_config)  # a failed resume changes nothing
            raise
        if is_main_process():
            from flowctl.rundir import mark_complete

            mark_complete(run_dir, job.command)
        return result


@contextlib.contextmanager
def _run_lock(run_dir: Path, command: str) -> Any:
    """The run directory's exclusive lock; a busy run becomes a one-line CLIError."""
    from flowctl.rundir import RunBusy, run_lock

    try:
        lock = run_lock(run_dir, command)
        lock.__enter__()
    except RunBusy as exc:
        raise CLIError(str(exc)) from None
    try:
        yield run_dir
    finally:
        lock.__exit__(None, None, None)


def _check_resume_compatible(run_dir: Path, body: dict) -> None:
    from flowctl.apps.common import read_config

    old = read_config(run_dir)
    for key in ("app", "flow"):
        o, n = old.get(key), body.get(key)
        if key == "flow" and isinstance(o, dict) and isinstance(n, dict):
            o = {k: v for k, v in o.items() if k != "features" or n.get(k) is not None}
            n = {k: v for k, v in n.items() if k != "features" or v is not None}
            diff = sorted(k for k in set(o) | set(n) if o.get(k) != n.get(k))
            if diff:
                raise CLIError(
                    f"cannot resume {run_dir}: its flow differs in {', '.join(diff)} "
                    f"({', '.join(f'{k}={o.get(k)!r}' for k in diff)} there)"
                )
        elif o != n:
            raise CLIError(f"cannot resume {run_dir}: its {key} is {o!r}, not {n!r}")


def _report_and_exit(exc: BaseException) -> None:
    """Turn known exceptions into one line on stderr and an exit code."""
    from flowctl.apps.common import UserError
    from flowctl.data.table import DataError

    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] in (
            "hydra", "omegaconf", "yaml", "numpy", "torch", "h5py", "matplotlib"):
        if _debug():
            traceback.print_exc()
        print(f"{PROG}: error: missing dependency {exc.name!r}: install flowctl with its "
              "dependencies (pip install . or make install)", file=sys.stderr)
        sys.exit(1)
    try:
        from flowctl.training import ConfigError, TrainingError, TrainingInterrupted
    except ImportError:  # trainer not importable: fall back to generic handling
        ConfigError = TrainingError = TrainingInterrupted = ()  # type: ignore[assignment,misc]

    if _debug():
        traceback.print_exc()
    if TrainingInterrupted and isinstance(exc, TrainingInterrupted):  # type: ignore[arg-type]
        code = int(getattr(exc, "exit_code", 143))
        print(f"{PROG}: interrupted: {exc}", file=sys.stderr)
        sys.exit(code)
    from flowctl.rundir import RunBusy, RunConfigError

    if isinstance(exc, (CLIError, UserError, DataError, RunBusy, RunConfigError)):
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    from flowctl.apps.common import ResultError

    if isinstance(exc, ResultError):
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    if ConfigError and isinstance(exc, ConfigError):  # type: ignore[arg-type]
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if TrainingError and isinstance(exc, TrainingError):  # type: ignore[arg-type]
        print(f"{PROG}: training failed: {exc}", file=sys.stderr)
        sys.exit(1)
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(exc, MissingMandatoryValue):
        key = getattr(exc, "full_key", "") or "a key"
        print(f"{PROG}: error: {key} is required: pass {key}=VALUE", file=sys.stderr)
        sys.exit(2)
    if isinstance(exc, KeyboardInterrupt):
        print(f"{PROG}: interrupted", file=sys.stderr)
        sys.exit(130)
    if isinstance(exc, OSError):  # disk full, permissions, read-only file systems, ...
        print(f"{PROG}: error: {_os_error_line(exc)}", file=sys.stderr)
        sys.exit(1)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    print(f"{PROG}: internal error: {type(exc).__name__}: {first} "
          "(set FLOWCTL_DEBUG=1 for the traceback)", file=sys.stderr)
    sys.exit(1)


def _os_error_line(exc: OSError) -> str:
    """One line for an I/O error: the path, then what the system said."""
    what = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    where = exc.filename or ""
    if exc.filename2:
        where = f"{where} -> {exc.filename2}"
    return f"{where}: {what}" if where else f"I/O error: {what}"


def _make_task(job: _Job):
    def flowctl_task(cfg: Any) -> None:
        try:
            _run_task(job, cfg)
        except SystemExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported as one line
            _report_and_exit(exc)

    flowctl_task.__module__ = __name__
    return flowctl_task


# --------------------------------------------------------------------------- main


def _hydra_argv(inv: Invocation, config_name: str, hydra_ovr: list[str]) -> list[str]:
    """Hydra's argv: flags, our output-dir settings, then the user's overrides."""
    args = list(inv.flags)
    if inv.config_dir:
        args += ["--config-dir", inv.config_dir]
    if inv.multirun:
        args.append("--multirun")
    args += ["--config-name", config_name]
    return args + hydra_ovr + inv.overrides


def _user_overrides(inv: Invocation, run_path: Path | None) -> list[str]:
    out = []
    for o in inv.overrides:
        key = o.split("=", 1)[0]
        if run_path is not None and key.lstrip("+") in RUN_ADDABLE:
            o = o.lstrip("+")
            o = "++" + o  # e.g. evaluate run=D data.path=FILE on a toy-data run
        out.append(o)
    return out


def _hydra_overrides(inv: Invocation, run_path: Path | None) -> list[str]:
    rank = int(os.environ.get("RANK", "0"))
    ovr = [f"hydra.job.name={inv.command}"]
    if run_path is not None:
        rd = str(run_path)
        ovr += [f"hydra.run.dir={rd}", "hydra.output_subdir=null",
                f"hydra.sweep.dir={rd}", f"hydra.sweep.subdir=.{inv.command}_${{hydra.job.num}}"]
    else:
        assert inv.config is not None
        rd = inv.run_dir or _distributed_run_dir(inv.config) or default_run_dir(inv.config)
        ovr += [f"hydra.run.dir={rd}", f"hydra.sweep.dir={rd}", "hydra.sweep.subdir=${hydra.job.num}"]
        if rank != 0:
            ovr.append("hydra.output_subdir=null")
    if rank != 0:
        ovr.append("hydra/job_logging=disabled")
    return ovr


def _run_hydra(primary_dir: Path, config_name: str, argv: list[str], job: _Job) -> None:
    import hydra

    task = hydra.main(version_base="1.3", config_path=str(primary_dir),
                      config_name=config_name)(_make_task(job))
    saved = sys.argv
    sys.argv = [PROG] + argv
    try:
        task()
    finally:
        sys.argv = saved


def _help_config_dir(argv: Sequence[str]) -> str | None:
    for i, a in enumerate(argv):
        if a in ("--config-dir", "-cd") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config-dir="):
            return a.split("=", 1)[1]
    return None


def _dispatch(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(help_text(_help_config_dir(argv)))
        return 0
    if argv[0] == "--version":
        from flowctl import __version__

        print(f"{PROG} {__version__}")
        return 0
    command = argv[0]
    if command not in SUBCOMMANDS:
        close = difflib.get_close_matches(command, list(SUBCOMMANDS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise CLIError(f"unknown command {command!r}{hint}; commands: {', '.join(SUBCOMMANDS)}")
    if any(a in ("-h", "--help") for a in argv[1:]):
        print(help_text(_help_config_dir(argv)))
        return 0
    inv = parse_argv(argv)
    configs = list_configs(inv.config_dir)

    with contextlib.ExitStack() as stack:
        run_path: Path | None = None
        new_run = command in CONFIG_RUN_COMMANDS and inv.run is None and inv.config is not None
        if new_run and command == "classify" and inv.config in configs \
                and config_app(configs[inv.config], configs) in IN_RUN_CLASSIFY_APPS:
            new_run = False
        if command in RUN_COMMANDS and not new_run:
            from flowctl.apps.common import UserError, check_run_dir

            if inv.run is None and inv.config is None:
                raise CLIError(f"`{command}` needs run=PATH or config=NAME (its newest run)")
            if inv.config is not None and inv.config not in configs and inv.run is None:
                _unknown_config(inv.config, configs)
            if inv.run_dir is not None:
                raise CLIError(f"`{command}` reads an existing run: use run=PATH, not run_dir=")
            run_path = Path(inv.run) if inv.run is not None else newest_run(inv.config or "")
            try:
                run_path = check_run_dir(run_path, need_checkpoint=True).resolve()
            except UserError as exc:
                raise CLIError(str(exc)) from None
            run_path, primary_dir = _run_view(stack, inv, run_path)
            config_name = "config"
        else:
            if inv.run is not None:
                raise CLIError(f"`{command}` writes a new run: use run_dir=PATH, not run=")
            if inv.config is None:
                names = ", ".join(configs) or "(none)"
                raise CLIError(f"`{command}` needs config=NAME; available configs: {names}")
            if inv.config not in configs:
                _unknown_config(inv.config, configs)
            if inv.out is not None:
                raise CLIError(f"out= is for commands that read a run (sample, evaluate, ...); "
                               f"`{command}` writes a new run: use run_dir=PATH")
            primary_dir, config_name = shipped_config_dir(), inv.config
            if inv.run_dir is None and inv.overrides and _resume_requested(inv.overrides):
                inv.run_dir = str(newest_run(inv.config, complete_only=False))
            if inv.run_dir is not None and not inv.show_only and _is_main():
                stack.enter_context(_run_lock(Path(inv.run_dir), command))

        inv.overrides = _user_overrides(inv, run_path)
        hydra_ovr = _hydra_overrides(inv, run_path)
        validate(inv, primary_dir, config_name, hydra_ovr)
        job = _Job(command=command, config=inv.config, run=run_path)
        _run_hydra(primary_dir, config_name, _hydra_argv(inv, config_name, hydra_ovr), job)
    return 0


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _run_view(stack: contextlib.ExitStack, inv: Invocation, run_path: Path) -> tuple[Path, Path]:
    """Where a command that reads ``run_path`` works, and the folder Hydra composes from.

    The run's ``config.yaml`` is always read as plain values (:func:`sanitized_config`), never
    composed as the user's Hydra config. With ``out=DIR``, or when the run is not writable,
    the command works in an overlay (:func:`flowctl.rundir.overlay`) and the run is untouched;
    otherwise it writes into the run, holding its lock.
    """
    import yaml

    from flowctl.rundir import (
        RunConfigError,
        is_complete,
        is_writable,
        overlay,
        sanitized_config,
    )

    if not inv.show_only and not is_complete(run_path) and inv.run is not None:
        print(f"warning: run {run_path} did not finish (failed or interrupted); reading its "
              "last checkpoints", file=sys.stderr)
    trusted = frozenset(o.split("=", 1)[0].lstrip("+~") for o in inv.overrides)
    try:
        if inv.out is not None or not is_writable(run_path):
            if inv.out is not None:
                out = Path(inv.out)
                print(f"{inv.command}: writing to {out} ({run_path} is left unchanged)",
                      file=sys.stderr)
            else:
                out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flowctl-")))
                print(f"warning: run directory {run_path} is not writable: results are printed "
                      "only; pass out=DIR to keep files", file=sys.stderr)
            view = stack.enter_context(overlay(run_path, out, trusted)).resolve()
            if _is_main() and not inv.show_only:
                stack.enter_context(_run_lock(view, inv.command))
            return view, view
        cfg = sanitized_config(run_path, trusted)
    except RunConfigError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot set up out={inv.out}: {exc.strerror or exc}") from None
    primary = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flowctl-cfg-")))
    (primary / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    if _is_main() and not inv.show_only:
        stack.enter_context(_run_lock(run_path, inv.command))
    return run_path, primary


def _resume_requested(overrides: list[str]) -> bool:
    for o in overrides:
        k, _, v = o.partition("=")
        if k.lstrip("+") == "trainer.resume" and v.strip().lower() in ("true", "1", "yes"):
            return True
    return False


def _unknown_config(name: str, configs: dict[str, Path]) -> None:
    close = difflib.get_close_matches(name, list(configs), n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise CLIError(
        f"unknown config {name!r}{hint}; available configs: {', '.join(configs) or '(none)'}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowctl`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    tune_malloc()  # see flowctl/allocator.py
    try:
        return _dispatch(argv)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - every error becomes one line
        try:
            _report_and_exit(exc)
        except SystemExit as done:
            return int(done.code or 0)
        return 1


if __name__ == "__main__":
    sys.exit(main())
