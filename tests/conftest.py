"""Shared fixtures: tiny random Wan2.2-architecture models (real module types, tiny widths)."""

import pytest

from wan_egoexo.tiny.transformer import TINY_TRANSFORMER_CONFIG, build_tiny_transformer  # noqa: F401


def make_tiny_transformer(seed: int = 0):
    return build_tiny_transformer(seed)


@pytest.fixture
def tiny_transformer():
    return make_tiny_transformer()
