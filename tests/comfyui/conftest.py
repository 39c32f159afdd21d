"""Fixtures for the end-to-end tests: one ComfyUI server per test session, started from COMFYUI_PATH
with this repository as a custom node pack and a folder of tiny models under the real file names.

Without COMFYUI_PATH the server tests skip (the workflow conversion tests still run); under CI=true
they fail instead. scripts/test.sh runs these tests once per tested host (.ci/comfyui_hosts), each time
with COMFYUI_PATH pointing at that host, in that host's own Python environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .server import start_server
from .tiny_native_files import add_native_models


@pytest.fixture(scope="session")
def comfy_path() -> Path:
    value = os.environ.get("COMFYUI_PATH")
    if not value:
        if os.environ.get("CI"):  # CI always provides every tested host: never let these go quiet there
            pytest.fail("COMFYUI_PATH is unset in CI; scripts/test.sh sets it to each tested ComfyUI host in turn "
                        "(.ci/comfyui_hosts: 0.3.64, 0.33.0).")
        pytest.skip("COMFYUI_PATH is unset: point it at a ComfyUI source tree (CI: each host of .ci/comfyui_hosts, "
                    "see scripts/test.sh) to run the end-to-end tests.")
    path = Path(value)
    if not (path / "main.py").is_file():
        pytest.fail(f"COMFYUI_PATH={value}: no main.py there; expected a ComfyUI source tree.")
    return path


@pytest.fixture(scope="session")
def tiny_models_dir(comfy_path, tmp_path_factory) -> Path:
    from wan_egoexo.tiny.models_folder import build_tiny_models_folder  # noqa: PLC0415

    models_dir = tmp_path_factory.mktemp("models")
    build_tiny_models_folder(models_dir)
    add_native_models(models_dir)  # what ComfyUI's own loaders accept, for the native workflows
    return models_dir


@pytest.fixture(scope="session")
def comfy_server(comfy_path, tiny_models_dir, tmp_path_factory):
    server = start_server(comfy_path, tmp_path_factory.mktemp("comfyui"), tiny_models_dir)
    try:
        yield server
    finally:
        server.stop()
        # Left for a person reading a failure: the whole server log is in the pytest temp folder.
        print(f"\nComfyUI server log: {server.log_path}")


@pytest.fixture(scope="session")
def object_info(comfy_server) -> dict:
    return comfy_server.object_info()
