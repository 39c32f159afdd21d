"""Where training configs come from: a YAML or TOML file, or a config bundled with the package
(``exo2ego``, ``ego2exo``) named on the command line, which then works from any folder."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # Python 3.10, which the package still supports: the same parser, from PyPI
    import tomli as tomllib

import yaml

from wan_egoexo.errors import InputError


BUNDLED_CONFIGS = Path(__file__).resolve().parent / "configs"


def bundled_configs() -> list[str]:
    """Names of the configs installed with the package (exo2ego, ego2exo)."""
    return sorted(p.stem for p in BUNDLED_CONFIGS.glob("*.yaml"))


def resolve_config_path(value) -> Path:
    """A config file path, or the name of a bundled config (``exo2ego`` or ``exo2ego.yaml``), which then
    works from any folder."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    bundled = BUNDLED_CONFIGS / (path.name if path.suffix else f"{path.name}.yaml")
    if path.parent == Path(".") and bundled.is_file():
        return bundled
    raise InputError(f"--config: {value} does not exist; expected a .yaml or .toml training config, or the name of "
                     f"a bundled one ({', '.join(bundled_configs())}).")


def read_config_file(path) -> dict:
    """The options in a .yaml/.yml or .toml file (or a bundled config's name) as a nested dict."""
    path = resolve_config_path(path)
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text) or {}
        else:
            raise InputError(f"--config: {path} is neither .yaml/.yml nor .toml.")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: cannot be parsed ({exc}).") from None
    return data
