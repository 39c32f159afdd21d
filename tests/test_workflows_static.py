"""The shipped workflows (example_workflows/*.json) checked without running ComfyUI: UI format 0.4,
node types known to ComfyUI 0.3.64 (its /object_info dump) or to this pack, links whose types match
both sockets, widget values valid for their inputs (as the frontend writes them), a note listing the
model files, ``properties.models`` on every node that names a model file (checked against the
README's table), a thumbnail each, and files identical to what scripts/make_workflows.py writes."""

import importlib.util
import json
import os
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from wan_egoexo.models.model_files import TEXT_ENCODER, TRANSFORMER, VAE, lora_wanted
from wan_egoexo.in_context.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
# The checkout has the project's shared/ folder beside it (CI too).
OBJECT_INFO_CANDIDATES = [os.environ.get("WAN_EGOEXO_OBJECT_INFO"), REPO / "shared/comfyui/object_info-0.3.64.json",
                          REPO.parent / "shared/comfyui/object_info-0.3.64.json"]


def _missing(reason: str):
    """Locally a missing reference file skips; in CI (CI=true) it is a failure, so the check never goes quiet."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # drawn by the frontend, never executed
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
FILE_MARKER = "__listed_file__"
INPUT_VIDEO = "worldwander_input.mp4"
# Built-in loader inputs that list model files (empty or placeholder lists in the /object_info dump).
BUILTIN_FILE_INPUTS = {("UNETLoader", "unet_name"), ("VAELoader", "vae_name"), ("CLIPLoader", "clip_name"),
                       ("LoraLoaderModelOnly", "lora_name")}
# (node type, widget) naming each model file, on the WW_* path and on the native path.
FILE_WIDGETS = {
    "transformer": (("WorldWanderModelLoader", "model_name"), ("UNETLoader", "unet_name")),
    "vae": (("WorldWanderVAELoader", "vae_name"), ("VAELoader", "vae_name")),
    "text_encoder": (("WorldWanderTextEncoderLoader", "text_encoder_name"),),
    "lora": (("WorldWanderLoraLoader", "lora_name"), ("WorldWanderLoraNative", "lora_name")),
}


def first_existing(candidates) -> Path | None:
    return next((Path(c) for c in candidates if c and Path(c).exists()), None)


# ---------------------------------------------------------------- node specifications

@dataclass
class Input:
    name: str
    kind: str  # socket type, or "COMBO"
    config: dict
    options: list | None
    required: bool

    @property
    def is_widget(self) -> bool:
        return self.kind in WIDGET_TYPES and not self.config.get("forceInput")

    @property
    def lists_files(self) -> bool:
        """A combo of file names, which differ between installations (models, uploads)."""
        return bool(self.config.get("image_upload") or self.config.get("video_upload") or
                    any(FILE_MARKER in str(option) for option in self.options or []))


@dataclass
class NodeSpec:
    inputs: list
    outputs: list

    def input(self, name) -> Input | None:
        return next((i for i in self.inputs if i.name == name), None)

    def widget_slots(self) -> list:
        """(kind, input) per widget value in order, as both frontends serialise them: required then optional
        inputs; a seed's control_after_generate value right after it; an upload button after the required ones."""
        slots = []
        for required in (True, False):
            for spec in (i for i in self.inputs if i.required == required):
                if spec.is_widget:
                    slots.append(("value", spec))
                    if spec.kind == "INT" and (spec.config.get("control_after_generate")
                                               or spec.name in ("seed", "noise_seed")):
                        slots.append(("control", spec))
            if required and any(i.config.get("image_upload") or i.config.get("video_upload") for i in self.inputs):
                slots.append(("upload", None))
        return slots


def parse_inputs(definition: dict, order: dict | None = None) -> list:
    inputs = []
    for section in ("required", "optional"):
        entries = definition.get(section, {}) or {}
        names = (order or {}).get(section) or list(entries)
        for name in names:
            entry = entries[name]
            kind, config = entry[0], (entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {})
            options = None
            if isinstance(kind, list):
                kind, options = "COMBO", kind
            elif kind == "COMBO":
                options = config.get("options", [])
            inputs.append(Input(name, kind, config, options, section == "required"))
    return inputs


def fake_folder_paths(root: Path) -> types.ModuleType:
    """A folder_paths whose every model folder and input folder lists one marker file."""
    (root / "input").mkdir(parents=True, exist_ok=True)
    (root / "input" / f"{FILE_MARKER}.mp4").write_bytes(b"")
    module = types.ModuleType("folder_paths")
    module.folder_names_and_paths = {name: ([str(root / name)], {".safetensors"})
                                     for name in ("diffusion_models", "text_encoders", "vae", "loras")}
    module.get_filename_list = lambda name: [f"{FILE_MARKER}.safetensors"]
    module.get_folder_paths = lambda name: [str(root / name)]
    module.get_input_directory = lambda: str(root / "input")
    return module


@pytest.fixture(scope="module")
def pack_specs(tmp_path_factory):
    fake = fake_folder_paths(tmp_path_factory.mktemp("comfy"))
    saved = sys.modules.get("folder_paths")
    sys.modules["folder_paths"] = fake
    try:
        name = "ComfyUI-WorldWander-static"
        spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py")
        pack = importlib.util.module_from_spec(spec)
        sys.modules[name] = pack
        spec.loader.exec_module(pack)
        from stub_comfy_host import node_list  # noqa: PLC0415  (needs COMFYUI_PATH's comfy_api: the V3 schema)

        infos = [cls.GET_NODE_INFO_V1() for cls in node_list(pack)]  # what /object_info serves
        return {info["name"]: NodeSpec(parse_inputs(info["input"], info["input_order"]), list(info["output"]))
                for info in infos}
    finally:
        if saved is None:
            sys.modules.pop("folder_paths", None)
        else:
            sys.modules["folder_paths"] = saved


@pytest.fixture(scope="module")
def builtin_specs():
    path = first_existing(OBJECT_INFO_CANDIDATES)
    if path is None:
        _missing("object_info-0.3.64.json not found beside the checkout (set WAN_EGOEXO_OBJECT_INFO)")
    info = json.loads(path.read_text())
    return {key: NodeSpec(parse_inputs(node["input"], node.get("input_order")), list(node["output"]))
            for key, node in info.items()}


def workflow_params():
    assert {p.name for p in WORKFLOWS} >= {"exo2ego.json", "ego2exo.json"}
    return [pytest.param(p, id=p.stem) for p in WORKFLOWS]


def load(path):
    return json.loads(Path(path).read_text())


def node_spec(node, pack_specs, builtin_specs) -> NodeSpec:
    return pack_specs.get(node["type"]) or builtin_specs[node["type"]]


# ---------------------------------------------------------------- the checks

@pytest.mark.parametrize("path", workflow_params())
def test_ui_format_and_known_node_types(path, pack_specs, builtin_specs):
    workflow = load(path)
    assert workflow["version"] == 0.4
    ids = [node["id"] for node in workflow["nodes"]]
    assert len(ids) == len(set(ids)) and workflow["last_node_id"] >= max(ids)
    assert workflow["last_link_id"] >= max(link[0] for link in workflow["links"])
    for node in workflow["nodes"]:
        kind = node["type"]
        assert kind in pack_specs or kind in builtin_specs or kind in FRONTEND_ONLY, f"unknown node type {kind}"


@pytest.mark.parametrize("path", workflow_params())
def test_links_connect_matching_socket_types(path, pack_specs, builtin_specs):
    workflow = load(path)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        source, sink = nodes[origin], nodes[target]
        output_type = node_spec(source, pack_specs, builtin_specs).outputs[origin_slot]
        assert output_type == kind == source["outputs"][origin_slot]["type"], (link_id, output_type, kind)
        assert link_id in source["outputs"][origin_slot]["links"]
        socket = sink["inputs"][target_slot]
        assert socket["link"] == link_id
        spec = node_spec(sink, pack_specs, builtin_specs).input(socket["name"])
        assert spec is not None, f"{sink['type']} has no input {socket['name']}"
        assert spec.kind == kind == socket["type"], (link_id, sink["type"], socket["name"], spec.kind, kind)
        assert source["order"] < sink["order"], "node order is not a topological order"
    linked = {link[0] for link in workflow["links"]}
    for node in workflow["nodes"]:
        for socket in node.get("inputs", []):
            assert socket["link"] is None or socket["link"] in linked
        if node["type"] in FRONTEND_ONLY:
            continue
        connected = {socket["name"] for socket in node.get("inputs", []) if socket["link"] is not None}
        for spec in node_spec(node, pack_specs, builtin_specs).inputs:
            if spec.required and not spec.is_widget:
                assert spec.name in connected, f"{node['type']}.{spec.name} is required but not connected"


def check_value(node_type, kind, spec, value):
    where = f"{node_type}.{spec.name if spec else 'upload'} = {value!r}"
    if kind == "control":
        assert value in CONTROL_VALUES, where
    elif kind == "upload":
        assert value == "image", where
    elif spec.kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), where
        assert spec.config.get("min", -2**64) <= value <= spec.config.get("max", 2**64), where
    elif spec.kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        assert spec.config.get("min", -1e308) <= value <= spec.config.get("max", 1e308), where
    elif spec.kind == "STRING":
        assert isinstance(value, str), where
    elif spec.kind == "BOOLEAN":
        assert isinstance(value, bool), where
    elif spec.lists_files or (node_type, spec.name) in BUILTIN_FILE_INPUTS:
        assert isinstance(value, str) and value, where
    else:
        assert value in spec.options, f"{where} is not one of {spec.options}"


@pytest.mark.parametrize("path", workflow_params())
def test_widget_values_are_valid_for_their_inputs(path, pack_specs, builtin_specs):
    for node in load(path)["nodes"]:
        values = node.get("widgets_values", [])
        if node["type"] in FRONTEND_ONLY:
            assert len(values) == 1 and isinstance(values[0], str)
            continue
        slots = node_spec(node, pack_specs, builtin_specs).widget_slots()
        if len(values) == len(slots) - 1 and any(kind == "upload" for kind, _ in slots):
            slots = [slot for slot in slots if slot[0] != "upload"]  # the upload button's value is optional
        assert len(values) == len(slots), f"{node['type']}: {len(values)} widget values for {len(slots)} widgets"
        for (kind, spec), value in zip(slots, values):
            check_value(node["type"], kind, spec, value)


@pytest.mark.parametrize("path", workflow_params())
def test_the_task_the_model_files_and_the_note(path, pack_specs, builtin_specs):
    workflow = load(path)
    task = get_task(path.stem.split("_")[0])  # exo2ego.json, exo2ego_long_clip.json, ...
    lora = lora_wanted(task)
    by_type = {}
    for node in workflow["nodes"]:
        by_type.setdefault(node["type"], []).append(node)

    def value(node_type, name):
        (node,) = by_type[node_type]
        slots = node_spec(node, pack_specs, builtin_specs).widget_slots()
        index = next(i for i, (kind, spec) in enumerate(slots) if kind == "value" and spec.name == name)
        return node["widgets_values"][index]

    def file_value(role):
        (found,) = [value(kind, name) for kind, name in FILE_WIDGETS[role] if kind in by_type]
        return found

    native = "_native" in path.stem
    in_context_type = ("WorldWanderInContextWindowsNative" if path.stem.endswith("_native_long_clip") else
                       "WorldWanderInContextNative" if native else "WorldWanderInContext")
    assert file_value("transformer") == TRANSFORMER.names[0]
    assert file_value("vae") == VAE.names[0]
    assert file_value("text_encoder") == TEXT_ENCODER.names[0]
    assert file_value("lora") == lora.names[0]
    assert value("WorldWanderTextEncode", "task") == value(in_context_type, "task") == task.name
    assert value("WorldWanderLoadVideo", "video") == INPUT_VIDEO
    in_context = by_type[in_context_type][0]
    reference = next(s for s in in_context["inputs"] if s["name"] == "reference")
    assert (reference["link"] is not None) == task.uses_reference

    notes = [n["widgets_values"][0] for n in workflow["nodes"] if n["type"] in FRONTEND_ONLY]
    assert len(notes) == 1
    needed = [f"diffusion_models/{TRANSFORMER.names[0]}", f"vae/{VAE.names[0]}",
              f"text_encoders/{TEXT_ENCODER.names[0]}", f"loras/{lora.names[0]}", lora.url]
    if native:  # the stock text path, as the alternative to WorldWander Text Encode
        needed += ["CLIPLoader", "type 'wan'", "CLIP Text Encode", task.prompt, "GGUF"]
    for text in needed:
        assert text in notes[0], f"the note does not mention {text}"


def test_the_native_workflows_use_stock_nodes_around_the_packs_native_ones():
    for stem in ("exo2ego_native", "ego2exo_native", "exo2ego_native_long_clip"):
        types_ = {node["type"] for node in load(REPO / "example_workflows" / f"{stem}.json")["nodes"]}
        assert {"UNETLoader", "VAELoader", "CFGGuider", "SamplerCustomAdvanced", "VAEDecode"} <= types_
        assert not types_ & {"WorldWanderModelLoader", "WorldWanderVAELoader", "WorldWanderSampler",
                             "WorldWanderDecode", "WorldWanderInContext"}, types_


# ---------------------------------------------------------------- files, thumbnails, model downloads

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft")
README_ROW = re.compile(r"^\| `models/(?P<folder>[^`]+)` \| `(?P<name>[^`]+)`[^|]*\| \[[^\]]*\]\((?P<url>[^)]+)\) \|$")


def make_workflows_module():
    spec = importlib.util.spec_from_file_location("make_workflows_under_test", REPO / "scripts/make_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_model_table() -> dict:
    """{file name: (folder, url)} from the README's model table."""
    rows = [README_ROW.match(line) for line in (REPO / "README.md").read_text().splitlines()]
    return {row["name"]: (row["folder"], row["url"]) for row in rows if row}


def test_shipped_files_are_what_the_generator_writes():
    generator = make_workflows_module()
    assert sorted(generator.WORKFLOWS) == sorted(p.stem for p in WORKFLOWS)
    for stem, make in generator.WORKFLOWS.items():
        shipped = (REPO / "example_workflows" / f"{stem}.json").read_text()
        assert generator.workflow_text(make()) == shipped, f"{stem}.json is stale: run python scripts/make_workflows.py"


@pytest.mark.parametrize("path", workflow_params())
def test_each_workflow_has_a_thumbnail_drawn_from_it(path):
    from PIL import Image  # noqa: PLC0415

    thumbnail = path.with_suffix(".jpg")  # ComfyUI's frontend asks for <name>.jpg beside <name>.json
    assert thumbnail.is_file(), f"{thumbnail.name} is missing"
    with Image.open(thumbnail) as image:
        assert image.format == "JPEG" and image.size == (512, 512)
        shipped = np.asarray(image.convert("RGB"), dtype=np.float32)
    generator = make_workflows_module()
    drawn = generator.thumbnail(path.stem, load(path))  # with the template's title and description
    off = np.abs(np.asarray(drawn, dtype=np.float32) - shipped).max(axis=-1) > 64  # JPEG noise stays below
    assert off.mean() < 2e-4, f"{thumbnail.name} is stale ({off.mean():.2%} of pixels): run python scripts/make_workflows.py"


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@pytest.mark.parametrize("path", workflow_params())
def test_each_template_has_a_description_a_user_can_choose_by(path):
    """ComfyUI's browser shows a pack's template as its file name (title, and description with - and
    _ as spaces); the generator's description, drawn on the thumbnail, says what it is for."""
    templates = make_workflows_module().TEMPLATES
    assert path.stem in templates, f"{path.name} has no row in make_workflows.TEMPLATES"
    description = templates[path.stem].description
    assert "\n" not in description and 60 <= len(description) <= 130, description  # one real line
    assert not _words(description) <= _words(path.stem.replace("_", " ") + " worldwander native long clip")
    task = path.stem.split("_")[0]
    assert ("first-person view" if task == "exo2ego" else "third-person view") in description
    assert ("photo of the wearer" in description) == (task == "ego2exo")  # ego->exo needs the reference image
    assert ("ComfyUI's own model loading" in description) == ("_native" in path.stem)  # also *_native_long_clip
    assert ("any length" in description) == ("long_clip" in path.stem)
    others = [t.description for stem, t in templates.items() if stem != path.stem]
    assert description not in others


@pytest.mark.parametrize("path", workflow_params())
def test_model_files_carry_download_entries_matching_the_readme(path):
    table = readme_model_table()
    assert len(table) >= 5, "the README's model table was not found"
    named = 0
    for node in load(path)["nodes"]:
        files = [v for v in node.get("widgets_values", []) if isinstance(v, str) and v.endswith(MODEL_SUFFIXES)]
        entries = node.get("properties", {}).get("models", [])
        assert sorted(e["name"] for e in entries) == sorted(files), f"{node['type']}: models {entries} vs {files}"
        for entry in entries:
            assert set(entry) == {"name", "url", "directory"}, entry
            assert entry["name"] in table, f"{entry['name']} is not in the README's model table"
            assert (entry["directory"], entry["url"]) == table[entry["name"]], (entry, table[entry["name"]])
            named += 1
    assert named >= 4
