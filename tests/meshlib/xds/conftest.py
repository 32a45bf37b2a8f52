"""Fixtures: the real translator's output for :func:`xds_models.canary_model`."""

from __future__ import annotations

import pytest
from google.protobuf import message

from tests.meshlib.xds.xds_models import MESHLIB, canary_model
from xds_server.translate import build_resources


@pytest.fixture(scope="session")
def canary() -> dict[str, dict[str, message.Message]]:
    """type URL → name → proto, as the control plane serves them to a meshlib node."""
    return build_resources(canary_model(), MESHLIB)
