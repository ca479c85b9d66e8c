"""flowctl.allocator: glibc's thresholds are set by the command, not by importing the library."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

from flowctl.allocator import tune_malloc


def test_opt_out_by_environment(monkeypatch):
    monkeypatch.setenv("FLOWCTL_MALLOC", "default")
    assert tune_malloc() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_applies_on_glibc(monkeypatch):
    monkeypatch.delenv("FLOWCTL_MALLOC", raising=False)
    name = ctypes.util.find_library("c") or ""
    if "libc.so" not in name:
        pytest.skip("not glibc")
    assert tune_malloc() is True
    assert tune_malloc() is True  # idempotent


def test_importing_the_library_does_not_tune():
    """A fresh interpreter importing the flow library never loads the allocator module."""
    code = ("import sys, flowctl.flows, flowctl.training\n"
            "sys.exit(1 if 'flowctl.allocator' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_command_tunes_at_start(monkeypatch):
    from flowctl import cli

    calls = []
    monkeypatch.setattr(cli, "tune_malloc", lambda: calls.append(1) or True)
    cli.main(["--help"])
    assert calls == [1]
