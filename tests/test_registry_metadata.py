"""pyproject.toml against the Comfy registry's rules (docs.comfy.org/registry/specifications): the
node id ([project] name), the version, [tool.comfy] with a DisplayName and an Icon that is a file
shipped in this repository, requires-comfyui a range that holds every tested host; and the host's own
pyproject reader (comfy_config, of the ComfyUI at COMFYUI_PATH) reads it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (the test extra installs tomli there)
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
COMFYUI_CANDIDATES = [os.environ.get("COMFYUI_PATH"), REPO / "shared/comfyui/ComfyUI-0.3.64",
                      REPO.parent / "shared/comfyui/ComfyUI-0.3.64"]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def registry_name_faults(name: str) -> list[str]:
    """The registry's node-id rules, each as the fault it names."""
    faults = []
    if not 0 < len(name) < 100:
        faults.append("must be 1-99 characters")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        faults.append("only letters, digits, '-', '_' and '.'")
    if re.search(r"[._-]{2}", name):
        faults.append("no consecutive special characters")
    if not name[:1].isalpha():
        faults.append("must start with a letter")
    if "comfyui" in name.lower():
        faults.append("must not contain 'ComfyUI'")
    return faults


@pytest.mark.parametrize("bad", ["ComfyUI-WorldWander", "comfyui_worldwander", "9lives", "-x", "a--b", "a b", ""])
def test_the_name_rules_catch_what_the_registry_refuses(bad):
    assert registry_name_faults(bad)


def test_project_name_and_version_follow_the_registry(pyproject):
    project = pyproject["project"]
    assert registry_name_faults(project["name"]) == [], project["name"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["urls"]["Repository"].startswith("https://github.com/")
    assert project["license"] and project["description"]


def test_tool_comfy_has_a_display_name_and_an_icon_shipped_here(pyproject):
    from PIL import Image  # noqa: PLC0415

    comfy = pyproject["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"].strip()
    owner_repo = pyproject["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    match = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(owner_repo)}/main/(.+)", comfy["Icon"])
    assert match, f"Icon {comfy['Icon']} is not a file of {owner_repo}"
    icon = REPO / match.group(1)
    assert icon.is_file(), f"{icon} is not in the repository"
    with Image.open(icon) as image:  # the registry takes SVG, PNG, JPG or GIF up to 800x400
        assert image.format in ("PNG", "JPEG", "GIF") and image.width <= 800 and image.height <= 400


def comfyui_hosts_tested() -> list[str]:
    """The hosts scripts/test.sh runs the ComfyUI tests on (.ci/comfyui_hosts, first column)."""
    rows = [line.split() for line in (REPO / ".ci/comfyui_hosts").read_text().splitlines()]
    return [row[0] for row in rows if row and not row[0].startswith("#")]


def test_requires_comfyui_is_a_range_every_tested_host_is_in(pyproject):
    from packaging.specifiers import SpecifierSet  # noqa: PLC0415
    from packaging.version import Version  # noqa: PLC0415

    declared = pyproject["tool"]["comfy"]["requires-comfyui"]
    specifier = SpecifierSet(declared)  # InvalidSpecifier unless it is a PEP 440 range
    tested = [Version(version) for version in comfyui_hosts_tested()]
    assert {"0.3.64", "0.33.0"} <= set(map(str, tested))
    outside = [str(version) for version in tested if version not in specifier]
    assert not outside, f"requires-comfyui {declared!r} excludes the tested host(s) {outside}"
    oldest = min(tested)
    below = Version(f"{oldest.major}.{oldest.minor}.{oldest.micro - 1}" if oldest.micro else f"{oldest.major}.{oldest.minor - 1}.999")
    assert below not in specifier, f"requires-comfyui {declared!r}: its floor should be the oldest tested host, {oldest}"


@pytest.mark.comfyui_host
def test_comfyuis_own_reader_reads_it(pyproject):
    root = next((Path(c) for c in COMFYUI_CANDIDATES if c and (Path(c) / "comfy_config").is_dir()), None)
    if root is None:
        message = "ComfyUI not found (set COMFYUI_PATH; CI: each tested host, see scripts/test.sh)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from comfy_config import config_parser; "
            "c = config_parser.extract_node_configuration(sys.argv[2]); "
            "print(json.dumps([c.project.name, c.project.version, c.tool_comfy.publisher_id, "
            "c.tool_comfy.display_name, c.tool_comfy.icon]))")
    out = subprocess.run([sys.executable, "-c", code, str(root), str(REPO)], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    comfy = pyproject["tool"]["comfy"]
    assert json.loads(out.stdout) == [pyproject["project"]["name"], pyproject["project"]["version"],
                                      comfy["PublisherId"], comfy["DisplayName"], comfy["Icon"]]


def test_the_icon_is_what_its_script_draws():
    import importlib.util  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("make_icon_under_test", REPO / "scripts/make_icon.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with Image.open(REPO / "docs/icon.png") as shipped:
        assert shipped.size == (256, 256)
        off = np.abs(np.asarray(script.draw_icon(), dtype=np.float32) - np.asarray(shipped.convert("RGBA"), dtype=np.float32))
    assert (off.max(axis=-1) > 64).mean() < 2e-4, "docs/icon.png is stale: run python scripts/make_icon.py"


def test_every_package_folder_is_installed(pyproject):
    """The wheel lists its packages by hand (the trainer installs under another name than its folder):
    every folder with an __init__.py must be among them, under its installed name."""
    setuptools = pyproject["tool"]["setuptools"]
    renamed = {folder: name for name, folder in setuptools["package-dir"].items()}
    found = set()
    for top in ("wan_egoexo", "training"):
        for init in (REPO / top).rglob("__init__.py"):
            parts = list(init.parent.relative_to(REPO).parts)
            parts[0] = renamed.get(parts[0], parts[0])
            found.add(".".join(parts))
    assert found == set(setuptools["packages"])
    assert renamed == {"training": "wan_egoexo_training"}
