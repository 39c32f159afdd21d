"""A module of this repository as it was at an earlier git revision, imported beside the current one,
so a benchmark can time the code before a change against the code after it in one run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_at_revision(revision: str, module: str):
    """Import ``module`` (e.g. "wan_egoexo.memory.modulation") as it was at ``revision``, under a new
    name inside the same package (its relative imports resolve to today's package)."""
    relative = module.replace(".", "/") + ".py"
    try:
        source = subprocess.run(["git", "show", f"{revision}:{relative}"], cwd=REPO, capture_output=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"--before-rev: cannot read {relative} at {revision!r} from git ({exc}).") from None
    package, _, leaf = module.rpartition(".")
    name = f"{package}._{leaf}_at_{revision.replace('-', '_').replace('.', '_')}"
    path = Path(tempfile.mkdtemp(prefix="before_")) / f"{leaf}.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(name, path)
    loaded = importlib.util.module_from_spec(spec)
    loaded.__package__ = package
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded
