"""Shared fixtures: tiny random Wan2.2-architecture models (real module types, tiny widths)."""

import os
from pathlib import Path

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


# ---------------------------------------------------------------- runs on every tested ComfyUI host
# scripts/test.sh runs the whole suite against the primary host, then, with HOST_TESTS_ONLY=1 and
# COMFYUI_PATH pointing at each other host (.ci/comfyui_hosts), only the tests that need a host:
# everything under tests/comfyui and the tests marked comfyui_host.
HOST_TESTS_ONLY = "WORLDWANDER_HOST_TESTS_ONLY"
HOST_TEST_FOLDER = Path(__file__).resolve().parent / "comfyui"


def pytest_configure(config):
    config.addinivalue_line("markers", "comfyui_host: reads or runs the ComfyUI at COMFYUI_PATH, so it runs on "
                                       "every tested host (scripts/test.sh, .ci/comfyui_hosts)")


def needs_a_host(item) -> bool:
    return HOST_TEST_FOLDER in Path(item.path).resolve().parents or item.get_closest_marker("comfyui_host") is not None


def pytest_collection_modifyitems(config, items):
    if os.environ.get(HOST_TESTS_ONLY) != "1":
        return
    kept = [item for item in items if needs_a_host(item)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if not needs_a_host(item)])
        items[:] = kept
