"""A real ComfyUI server in a subprocess, with this repository installed as a custom node pack.

``start_server`` copies the ComfyUI tree found at COMFYUI_PATH into a scratch folder (leaving out
its own extra_model_paths.yaml, if any: a vendored copy may point it at folders that stop start-up),
links this repository in as ``custom_nodes/ComfyUI-WorldWander`` (beside a test-only pack that makes
ComfyUI build its Wan2.2 VAE at the tiny test widths, for the stock VAE Loader), writes a model
paths yaml that lists a models folder under both the current and the 2024 folder names, and runs
``main.py --cpu`` on a free loopback port with the current Python. ``ComfyServer`` talks to it over
HTTP (and the websocket, for progress) and stops it, process group and all.

Only the standard library is used for HTTP so that this module imports in any environment; the
websocket client (aiohttp, a ComfyUI dependency) is imported only where it is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PACK_NAME = "ComfyUI-WorldWander"
REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# Model folder names as ComfyUI 0.3.x calls them, and as the 2024 releases did.
MODEL_FOLDER_ALIASES = {
    "diffusion_models": ("diffusion_models", "unet"),
    "text_encoders": ("text_encoders", "clip"),
    "vae": ("vae",),
    "loras": ("loras",),
}

# The loopback only: ignore any proxy settings from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerError(RuntimeError):
    """The server did not start, answered unexpectedly, or a prompt did not finish in time."""


class PromptRejected(ServerError):
    """POST /prompt answered 400: ``body`` holds ComfyUI's ``error`` and ``node_errors``."""

    def __init__(self, body: dict):
        self.body = body
        super().__init__(f"ComfyUI rejected the prompt: {json.dumps(body, indent=1)[:4000]}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_model_paths_yaml(path: Path, models_dir: Path, custom_nodes_dir: Path) -> Path:
    """An extra_model_paths.yaml naming models_dir's folders under every alias, and custom_nodes_dir."""
    lines = ["worldwander_tests:", f"    base_path: {json.dumps(str(models_dir))}"]
    for folder, aliases in MODEL_FOLDER_ALIASES.items():
        for alias in aliases:
            lines.append(f"    {alias}: {folder}")
    lines.append(f"    custom_nodes: {json.dumps(str(custom_nodes_dir))}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class ComfyServer:
    """A running ComfyUI server and the folders it was given."""

    process: subprocess.Popen
    url: str
    comfy_dir: Path
    input_dir: Path
    output_dir: Path
    models_dir: Path
    log_path: Path
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    # ------------------------------------------------------------ log

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_text()[-chars:]

    # ------------------------------------------------------------ HTTP

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0):
        """(status, decoded JSON or text) for one request; HTTP errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with _OPENER.open(req, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text) if text else None
        except json.JSONDecodeError:
            return status, text

    def object_info(self) -> dict:
        status, info = self.request("GET", "/object_info", timeout=120)
        if status != 200 or not isinstance(info, dict):
            raise ServerError(f"GET /object_info answered {status}: {str(info)[:500]}")
        return info

    def queue_prompt(self, prompt: dict, client_id: str | None = None) -> str:
        """POST /prompt; the prompt id, or PromptRejected with ComfyUI's errors."""
        status, body = self.request("POST", "/prompt", {"prompt": prompt, "client_id": client_id or self.client_id})
        if status == 400 and isinstance(body, dict):
            raise PromptRejected(body)
        if status != 200 or not isinstance(body, dict) or "prompt_id" not in body:
            raise ServerError(f"POST /prompt answered {status}: {str(body)[:2000]}")
        return body["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        """The finished prompt's history entry, or None while it is queued or running."""
        status, body = self.request("GET", f"/history/{prompt_id}")
        if status != 200:
            raise ServerError(f"GET /history/{prompt_id} answered {status}: {str(body)[:500]}")
        return (body or {}).get(prompt_id)

    def wait_for_history(self, prompt_id: str, timeout: float = 300.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry is not None:
                return entry
            if self.process.poll() is not None:
                raise ServerError(f"the server exited ({self.process.returncode}) while running {prompt_id}:\n"
                                  f"{self.log_tail()}")
            time.sleep(0.5)
        self.interrupt()
        raise ServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s; server log:\n{self.log_tail()}")

    def run_prompt(self, prompt: dict, timeout: float = 300.0) -> dict:
        return self.wait_for_history(self.queue_prompt(prompt), timeout)

    def interrupt(self, prompt_id: str | None = None) -> None:
        # 0.3.x interrupts only this prompt when given its id; the 2024 server ignores the body.
        self.request("POST", "/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def run_and_interrupt(self, prompt: dict, should_interrupt, timeout: float = 300.0) -> tuple[str, list, int]:
        """Queue ``prompt`` while listening on the websocket; POST /interrupt at the first message
        ``(type, data)`` for which ``should_interrupt`` is true, then read on until the prompt ends.

        Returns (prompt_id, every (type, data) message of this prompt, index of the first message
        received after the interrupt request was answered).
        """
        import asyncio  # noqa: PLC0415

        import aiohttp  # noqa: PLC0415  (ComfyUI's own dependency)

        client_id = uuid.uuid4().hex
        ws_url = self.url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
        finished = {"execution_interrupted", "execution_error", "execution_success"}

        async def listen():
            messages, after_interrupt, prompt_id = [], None, None
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(ws_url, heartbeat=30) as ws:
                    prompt_id = await asyncio.to_thread(self.queue_prompt, prompt, client_id)
                    deadline = time.monotonic() + timeout
                    while True:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise ServerError(f"no end of prompt {prompt_id} within {timeout:.0f} s")
                        message = await ws.receive(timeout=remaining)
                        if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            raise ServerError(f"websocket closed while running {prompt_id}")
                        if message.type != aiohttp.WSMsgType.TEXT:
                            continue  # binary previews
                        decoded = json.loads(message.data)
                        kind, data = decoded.get("type"), decoded.get("data") or {}
                        if data.get("prompt_id") not in (None, prompt_id):
                            continue
                        messages.append((kind, data))
                        if after_interrupt is None and should_interrupt(kind, data):
                            await asyncio.to_thread(self.interrupt, prompt_id)
                            after_interrupt = len(messages)
                        ended = kind in finished or (kind == "executing" and data.get("node") is None
                                                     and data.get("prompt_id") == prompt_id)
                        if ended:
                            return prompt_id, messages, after_interrupt if after_interrupt is not None else -1

        try:
            return asyncio.run(listen())
        except (asyncio.TimeoutError, ServerError) as error:
            self.interrupt()  # do not leave a long run holding the queue
            raise ServerError(f"{error or 'timed out'}; server log:\n{self.log_tail()}") from error

    # ------------------------------------------------------------ stopping

    def stop(self, grace: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own group: start_new_session below
        except ProcessLookupError:
            return
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(grace)


def copy_comfyui(comfy_path: Path, destination: Path) -> Path:
    """Copy the ComfyUI tree without its extra_model_paths.yaml, caches, git data, user folders and
    custom nodes (top-level ones only: comfy_api/input, say, is code)."""
    if not (comfy_path / "main.py").is_file():
        raise ServerError(f"COMFYUI_PATH={comfy_path}: no main.py there; expected a ComfyUI source tree.")
    top_level_only = {"extra_model_paths.yaml", "input", "output", "temp", "user", "custom_nodes"}

    def ignore(folder, names):
        skipped = {name for name in names if name in ("__pycache__", ".git")}
        if Path(folder) == comfy_path:
            skipped |= top_level_only.intersection(names)
        return skipped

    shutil.copytree(comfy_path, destination, symlinks=True, ignore=ignore)
    (destination / "custom_nodes").mkdir()  # empty: the packs come from the yaml
    return destination


TINY_VAE_PACK = "worldwander_test_tiny_vae_widths"


def write_tiny_vae_widths_pack(folder: Path) -> Path:
    """A test-only custom node pack with no nodes: at start-up it makes ComfyUI build its Wan2.2 VAE at
    the tiny test VAE's widths (comfy/sd.py writes the real 160 / 256 into the constructor call), so
    the stock VAE Loader of the native workflows loads the tiny wan2.2_vae.safetensors. The same
    adjustment as the in-process native tests (native_host.py); ComfyUI's files are not changed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text(
        '"""Test only: ComfyUI builds the Wan2.2 VAE at the tiny test widths (tests/comfyui/server.py)."""\n'
        "import importlib.util, sys\n"
        f"sys.path.append({str(REPO_ROOT)!r})\n"
        "from wan_egoexo.tiny.vae import tiny_vae_config\n"
        f"_spec = importlib.util.spec_from_file_location('worldwander_native_host', {str(HERE / 'native_host.py')!r})\n"
        "_host = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_host)\n"
        "_host._tiny_wan22_vae_widths(tiny_vae_config())\n"
        "NODE_CLASS_MAPPINGS = {}\n")
    return folder


def start_server(comfy_path, work_dir, models_dir, pack_dir=REPO_ROOT, startup_timeout: float = 600.0,
                 extra_args=()) -> ComfyServer:
    """Start ComfyUI from a copy of ``comfy_path`` under ``work_dir`` and wait for /object_info.

    On failure the server is stopped and the error carries its log.
    """
    work_dir, models_dir = Path(work_dir), Path(models_dir)
    comfy_dir = copy_comfyui(Path(comfy_path), work_dir / "ComfyUI")
    custom_nodes = work_dir / "custom_nodes"
    input_dir, output_dir, temp_dir = work_dir / "input", work_dir / "output", work_dir / "temp"
    for folder in (custom_nodes, input_dir, output_dir, temp_dir):
        folder.mkdir(parents=True, exist_ok=True)
    (custom_nodes / PACK_NAME).symlink_to(Path(pack_dir).resolve(), target_is_directory=True)
    write_tiny_vae_widths_pack(custom_nodes / TINY_VAE_PACK)
    yaml_path = write_model_paths_yaml(work_dir / "model_paths.yaml", models_dir, custom_nodes)

    port = free_port()
    command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--extra-model-paths-config", str(yaml_path), "--input-directory", str(input_dir),
               "--output-directory", str(output_dir), "--temp-directory", str(temp_dir), *extra_args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log_path = work_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=comfy_dir, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    server = ComfyServer(process, f"http://127.0.0.1:{port}", comfy_dir, input_dir, output_dir, models_dir,
                         log_path)
    try:
        _wait_until_ready(server, startup_timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_ready(server: ComfyServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerError(f"ComfyUI exited with code {server.process.returncode} during start-up; "
                              f"log:\n{server.log_tail()}")
        try:
            status, _ = server.request("GET", "/object_info", timeout=60)
            if status == 200:
                return
        except OSError:
            pass  # not listening yet
        time.sleep(1.0)
    raise ServerError(f"ComfyUI did not answer /object_info within {timeout:.0f} s; log:\n{server.log_tail()}")
