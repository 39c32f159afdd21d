"""The shipped workflows in ComfyUI 0.3.64's template browser: the server lists them under the pack
(GET /api/workflow_templates, from example_workflows/, the folder it looks in first) and serves each
workflow and its thumbnail (the frontend asks for <name>.jpg)."""

from __future__ import annotations

import json
import urllib.request

from .server import PACK_NAME, REPO_ROOT

WORKFLOWS_DIR = REPO_ROOT / "example_workflows"


def get(server, path: str) -> tuple[int, str, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(server.url + path, timeout=30) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


def test_the_template_browser_lists_and_serves_every_shipped_workflow(comfy_server):
    shipped = sorted(path.stem for path in WORKFLOWS_DIR.glob("*.json"))
    assert shipped and not (REPO_ROOT / "workflows").exists()  # one folder, the one ComfyUI looks in first
    status, _, body = get(comfy_server, "/api/workflow_templates")
    assert status == 200
    assert sorted(json.loads(body)[PACK_NAME]) == shipped
    for stem in shipped:
        status, _, body = get(comfy_server, f"/api/workflow_templates/{PACK_NAME}/{stem}.json")
        assert status == 200 and json.loads(body) == json.loads((WORKFLOWS_DIR / f"{stem}.json").read_text())
        status, kind, body = get(comfy_server, f"/api/workflow_templates/{PACK_NAME}/{stem}.jpg")
        assert status == 200 and kind == "image/jpeg" and body[:3] == b"\xff\xd8\xff"
