"""Fixtures of the flow-library tests."""

import pytest
from flowcases import DEVICES


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param
