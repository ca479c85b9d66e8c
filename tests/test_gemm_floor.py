"""The product counting of benchmarks/gemm_floor.py (needs the peer libraries, as the benchmark)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("zuko")
pytest.importorskip("nflows")
pytest.importorskip("normflows")

from benchmarks.gemm_floor import mask_fraction, product_flops, profile_products
from flowctl.flows.made import MADE


def test_product_flops_from_shapes():
    assert product_flops("aten::mm", [[4, 3], [3, 5]]) == 2 * 4 * 3 * 5
    assert product_flops("aten::addmm", [[5], [4, 3], [3, 5]]) == 2 * 4 * 3 * 5
    assert product_flops("aten::bmm", [[2, 4, 3], [2, 3, 5]]) == 2 * 2 * 4 * 3 * 5


def test_mask_fraction_of_a_made_is_about_half():
    made = MADE(16, 2, [128, 128])
    assert 0.45 < mask_fraction(made) < 0.6
    assert mask_fraction(torch.nn.Sequential(torch.nn.Linear(3, 4))) == 1.0


def test_profile_counts_the_products_of_a_step():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    got = profile_products(lambda: (a @ b, torch.addmm(torch.zeros(16), a, b)), steps=2)
    assert got["gemm_calls"] == 2
    assert got["gemm_flops"] == 2 * (2 * 64 * 32 * 16)
    assert 0 < got["gemm_s"] <= got["profiled_step_s"]
