"""Shared fixtures: tiny random Wan2.2-architecture models (real module types, tiny widths)."""

import pytest

from wan_egoexo.tiny.transformer import TINY_TRANSFORMER_CONFIG, build_tiny_transformer  # noqa: F401


def make_tiny_transformer(seed: int = 0):
    return build_tiny_transformer(seed)


@pytest.fixture(autouse=True, scope="session")
def _prompt_cache_in_temp(tmp_path_factory):
    """Never write the prompt-embedding cache into the user's home during tests."""
    patcher = pytest.MonkeyPatch()
    patcher.setenv("WAN_EGOEXO_CACHE", str(tmp_path_factory.mktemp("wan_egoexo_cache")))
    yield
    patcher.undo()


@pytest.fixture
def tiny_transformer():
    return make_tiny_transformer()
