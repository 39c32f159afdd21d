"""Start-up cost: importing the node pack, registering its V3 nodes and listing every node's inputs
(what ComfyUI does at start-up and on every page load) imports neither diffusers, peft, transformers
nor torch._dynamo (nor ComfyUI's model code: only its comfy_api, which ComfyUI has imported already);
the translate command imports the modules of an option only when the run uses it."""

import json
import os
import subprocess
import sys
from pathlib import Path

from stub_comfy_host import COMFYUI  # the V3 nodes take their schema from a real ComfyUI's comfy_api

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "benchmarks" / "startup_probe.py"


def _probe(*args):
    done = subprocess.run([sys.executable, str(PROBE), str(REPO), *args], capture_output=True, text=True,
                          cwd="/", timeout=600, env={**os.environ, "COMFYUI_PATH": str(COMFYUI)})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_node_import_and_input_types_import_no_heavy_package():
    result = _probe()
    assert result["nodes"] >= 18  # every node of the pack, the native ones too
    assert result["after_import"] == result["after_host"]  # importing the pack alone imports nothing more
    heavy = {name for name, loaded in result["after_input_types"].items() if loaded}
    assert heavy == {"folder_paths", "comfy"}  # comfy_api's own imports (comfy.cli_args ...) and the stub host


def test_translate_imports_option_modules_only_when_used(tmp_path):
    modules = set(_probe("translate")["wan_egoexo_modules"])
    for option in ("wan_egoexo.lora.adapters", "wan_egoexo.memory.fp8_weights", "wan_egoexo.memory.compile",
                   "wan_egoexo.memory.vae_chunking", "wan_egoexo.memory.modulation",
                   "wan_egoexo.tiny.models_folder"):
        assert option not in modules, option
    # a demo run (tiny models, merged LoRA, no fp8 / compile / tiling) never imports those modules
    code = ("import sys, runpy; sys.argv = ['wan_egoexo', 'translate', '--demo', '--out', sys.argv[1]]; "
            "import wan_egoexo.cli.main as c; rc = c.main(sys.argv[1:]); "
            "print([m for m in ('wan_egoexo.lora.adapters', 'wan_egoexo.memory.fp8_weights', "
            "'wan_egoexo.memory.compile', 'wan_egoexo.memory.vae_chunking') if m in sys.modules], rc)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "demo.mp4")], capture_output=True, text=True,
                          cwd=str(tmp_path), timeout=600, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[] 0"
