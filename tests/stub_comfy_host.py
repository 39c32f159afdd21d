"""A stubbed ComfyUI host for the node tests: the few host modules the pack imports (folder_paths,
comfy.utils, comfy.model_management, comfy.model_patcher, comfy.cli_args) as a fake whose folders,
progress updates, model loads and Cancel button the tests can see, the pack imported the way
ComfyUI imports a custom node folder, the tiny real-layout models, and the node graph's helpers.

The nodes are V3 nodes, so their schema comes from a real ComfyUI's ``comfy_api``: importing this
module appends COMFYUI_PATH (a ComfyUI source tree, 0.3.64 or 0.33.0) to sys.path; without it the
node tests skip, and under CI they fail. Only the host modules the nodes call while running are stubbed.
"""

import asyncio
import enum
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from wan_egoexo.models.model_files import TEXT_ENCODER, TRANSFORMER, VAE, lora_wanted
from wan_egoexo.in_context.tasks import EXO2EGO
from wan_egoexo.tiny.models_folder import build_tiny_models_folder, make_demo_clip

REPO = Path(__file__).resolve().parents[1]
MODEL, VAE_FILE, TEXT_FILE = TRANSFORMER.names[0], VAE.names[0], TEXT_ENCODER.names[0]
LORA_FILE = lora_wanted(EXO2EGO).names[0]
CLIP = "worldwander_input.mp4"
SIZE = dict(width=64, height=64, frames=9, fps=8.0, frame_stride=1, start_frame=0)


def require_comfy_api() -> Path:
    """Put COMFYUI_PATH's comfy_api within reach (appended: this repository's ``nodes`` keeps priority
    over ComfyUI's nodes.py) and import it; skip (fail under CI) when there is no ComfyUI to take it from."""
    value = os.environ.get("COMFYUI_PATH")
    if not value or not (Path(value) / "comfy_api" / "latest").is_dir():
        reason = (f"COMFYUI_PATH={value!r} is not a ComfyUI source tree with comfy_api/latest (0.3.64 or later): the "
                  "V3 nodes take their schema from it; scripts/test.sh sets it (.ci/comfyui_env.sh).")
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)
    if value not in sys.path:
        sys.path.append(value)
    import comfy_api.latest  # noqa: F401,PLC0415  (imports ComfyUI's folder_paths and comfy.cli_args once)

    return Path(value)


COMFYUI = require_comfy_api()


def load_pack(name="ComfyUI-WorldWander-under-test"):
    """Import the repository root the way ComfyUI imports a custom node folder."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the stubbed host

class Interrupted(Exception):
    """Stands in for comfy.model_management.InterruptProcessingException."""


class PreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"


class Host:
    """State of the fake ComfyUI: its folders, progress updates, and when Cancel is pressed."""

    def __init__(self, root: Path, models: Path, folders: dict):
        self.input, self.output, self.temp = root / "input", root / "output", root / "temp"
        for folder in (self.input, self.output, self.temp):
            folder.mkdir(parents=True, exist_ok=True)
        self.folders = {name: ([str(models / sub) for sub in subs], {".safetensors", ".ckpt"})
                        for name, subs in folders.items()}
        self.folders["diffusers"] = ([str(models / "diffusers")], ["folder"])
        self.updates, self.unloads, self.loads = [], 0, []
        self.interrupt_at_check = None  # Cancel pressed before this interruption check (1-based)
        self.checks = 0
        self.args = types.SimpleNamespace(preview_method=PreviewMethod.NoPreviews, preview_size=256)

    def modules(self) -> dict:
        host, folders = self, self.folders

        def files(name):
            paths, extensions = folders[name]
            return sorted(Path(r, f).relative_to(base).as_posix() for base in paths for r, _, names in os.walk(base)
                          for f in names if os.path.splitext(f)[1] in extensions)

        def full_path(name, filename):
            return next((str(Path(b, filename)) for b in folders[name][0] if Path(b, filename).is_file()), None)

        def save_path(prefix, output_dir, width=0, height=0):
            subfolder, base = os.path.split(prefix)
            folder = Path(output_dir, subfolder)
            counter = 1 + (len([f for f in os.listdir(folder) if f.startswith(base)]) if folder.is_dir() else 0)
            return str(folder), base, counter, subfolder, prefix

        def check_interrupted():
            host.checks += 1
            if host.interrupt_at_check is not None and host.checks >= host.interrupt_at_check:
                raise Interrupted()

        class ProgressBar:
            def __init__(self, total):
                self.total = total

            def update_absolute(self, value, total=None, preview=None):
                host.updates.append((value, total, preview))

        fp = types.SimpleNamespace(
            folder_names_and_paths=folders, get_filename_list=files, get_full_path=full_path,
            get_folder_paths=lambda name: list(folders[name][0]), get_input_directory=lambda: str(self.input),
            get_output_directory=lambda: str(self.output), get_temp_directory=lambda: str(self.temp),
            get_annotated_filepath=lambda name: str(self.input / name),
            exists_annotated_filepath=lambda name: (self.input / name).is_file(), get_save_image_path=save_path)
        class ModelPatcher:  # comfy.model_patcher.ModelPatcher as far as the pack uses it
            def __init__(self, model, load_device, offload_device, size=0):
                self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size
                model.model_loaded_weight_memory = 0

            def loaded_size(self):
                return self.model.model_loaded_weight_memory

        def load_models_gpu(models, memory_required=0, force_full_load=False):
            for patcher in models:
                host.loads.append((repr(patcher.model), memory_required, force_full_load))
                patcher.model.to(patcher.load_device)
                patcher.model.model_loaded_weight_memory = patcher.size

        utils = types.SimpleNamespace(ProgressBar=ProgressBar)
        cpu = lambda: torch.device("cpu")  # noqa: E731
        mm = types.SimpleNamespace(
            InterruptProcessingException=Interrupted, get_torch_device=cpu, text_encoder_device=cpu,
            unet_offload_device=cpu, vae_device=cpu, vae_offload_device=cpu, soft_empty_cache=lambda force=False: None,
            unload_all_models=lambda: setattr(host, "unloads", host.unloads + 1), load_models_gpu=load_models_gpu,
            throw_exception_if_processing_interrupted=check_interrupted)
        patcher_module = types.SimpleNamespace(ModelPatcher=ModelPatcher)
        cli_args = types.SimpleNamespace(LatentPreviewMethod=PreviewMethod, args=self.args)
        comfy = types.SimpleNamespace(__path__=[], utils=utils, model_management=mm, cli_args=cli_args,
                                      model_patcher=patcher_module)
        return {"folder_paths": fp, "comfy": comfy, "comfy.utils": utils, "comfy.model_management": mm,
                "comfy.cli_args": cli_args, "comfy.model_patcher": patcher_module}


CURRENT_FOLDERS = {"diffusion_models": ["diffusion_models"], "text_encoders": ["text_encoders"], "vae": ["vae"],
                   "loras": ["loras"]}
OLD_FOLDERS = {"unet": ["diffusion_models"], "clip": ["text_encoders"], "vae": ["vae"], "loras": ["loras"]}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    build_tiny_models_folder(root)
    return root


@pytest.fixture
def host(tmp_path, models_dir, monkeypatch):
    fake = Host(tmp_path, models_dir, CURRENT_FOLDERS)
    for name, module in fake.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    make_demo_clip(fake.input / CLIP, frames=24, width=96, height=64, fps=8.0)
    return fake


def node_list(pack=None) -> list:
    """The node classes the pack's comfy_entrypoint hands to ComfyUI, as ComfyUI gets them."""
    extension = asyncio.run((pack or load_pack()).comfy_entrypoint())
    return asyncio.run(extension.get_node_list())


@pytest.fixture(scope="module")
def nodes():
    """{node id: class}; a node's id is its class name."""
    return {cls.__name__: cls for cls in node_list()}


def schema(cls):
    """The node's finalized V3 schema (what ComfyUI registers and serves in /object_info)."""
    return cls.GET_SCHEMA()


def choices(cls, name: str) -> list:
    """The menu of input ``name`` as ComfyUI would list it now."""
    return list(next(item for item in cls.define_schema().inputs if item.id == name).options)


@pytest.fixture
def lora_calls(monkeypatch):
    """Records the LoRA lists the sampler hands to wan_egoexo.memory.runtime.prepare_for_sampling
    (which still runs)."""
    import wan_egoexo.memory.runtime as runtime

    calls, real = [], runtime.prepare_for_sampling

    def record(transformer, loras, *args, **kwargs):
        calls.append(list(loras))
        return real(transformer, loras, *args, **kwargs)

    monkeypatch.setattr(runtime, "prepare_for_sampling", record)
    return calls


def call(cls, *args, hidden=None, **kwargs):
    """Run a node the way ComfyUI's executor does: execute on a locked clone of the class (a node that
    sets a class attribute fails here as it would there); the io.NodeOutput it returns."""
    import inspect  # noqa: PLC0415

    from comfy_api.internal import make_locked_method_func  # noqa: PLC0415

    names = list(inspect.signature(cls.execute).parameters)  # ComfyUI passes inputs by name only
    assert not set(names[:len(args)]) & set(kwargs), (names, kwargs)
    kwargs.update(zip(names, args))
    clone = cls.PREPARE_CLASS_CLONE(hidden or {})
    output = make_locked_method_func(cls, cls.FUNCTION, clone)(**kwargs)
    assert type(output).__name__ == "NodeOutput", output  # a plain dict breaks on 0.3.64
    return output


def run(nodes, name, *args, **kwargs):
    """A node's outputs as a tuple (its io.NodeOutput for an output node, which has none)."""
    output = call(nodes[name], *args, **kwargs)
    return output if nodes[name].GET_SCHEMA().is_output_node else output.result


def load_models(nodes):
    model = run(nodes, "WorldWanderModelLoader", MODEL, "fp32", "sdpa")[0]
    vae = run(nodes, "WorldWanderVAELoader", VAE_FILE)[0]
    encoder = run(nodes, "WorldWanderTextEncoderLoader", TEXT_FILE, "default")[0]
    return model, vae, encoder


def exo2ego_inputs(nodes, fit="crop"):
    """(model, vae, text, fit, context) of the exo2ego graph up to the sampler."""
    model, vae, encoder = load_models(nodes)
    text = run(nodes, "WorldWanderTextEncode", encoder, "exo2ego", "", "")[0]
    frames, fit_info, _, _ = run(nodes, "WorldWanderLoadVideo", CLIP, fit=fit, **SIZE)
    context = run(nodes, "WorldWanderInContext", vae, "exo2ego", frames, "collaborative", fit=fit_info)[0]
    return model, vae, text, fit_info, context


def sampler_args(steps=3, seed=7, cfg=5.0, denoise=1.0):
    return dict(seed=seed, steps=steps, cfg=cfg, shift=5.0, solver="unipc", denoise=denoise)
