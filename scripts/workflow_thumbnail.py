"""A template-browser thumbnail drawn from a UI-format workflow: its nodes at their canvas positions
and sizes, the links between their sockets, and a title. A drawing of the graph the user gets,
not a picture of a result: no real model output exists to show.
"""

from __future__ import annotations

import re

from PIL import Image, ImageDraw, ImageFont

SIZE = 512  # square, like the cards of ComfyUI's template browser
MAX_CAPTION_LINES = 2  # the description under the title; a longer one would squeeze the graph
BACKGROUND = (32, 33, 36)
NODE_BODY, NODE_TEXT, NOTE_BODY = (53, 53, 53), (222, 222, 222), (67, 60, 32)
LINK_COLOURS = {"IMAGE": (100, 181, 246), "LATENT": (255, 157, 245), "MODEL": (178, 157, 219),
                "VAE": (255, 110, 110), "CONDITIONING": (255, 211, 105), "FLOAT": (170, 238, 136)}
HEADER_COLOURS = {"Loader": (60, 90, 130), "Lora": (60, 90, 130), "Text": (120, 100, 40), "Video": (40, 110, 80),
                  "Image": (40, 110, 80), "Sampler": (110, 60, 120), "Sigmas": (110, 60, 120),
                  "Solver": (110, 60, 120), "Guider": (110, 60, 120), "Noise": (110, 60, 120),
                  "Decode": (130, 70, 60), "InContext": (110, 60, 120)}


def node_label(node: dict) -> str:
    """The node's title, else its type with spaces between words (WorldWanderLoadVideo -> WorldWander Load Video)."""
    if node.get("title"):
        return node["title"]
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", node["type"]).replace("World Wander", "WorldWander")


def _link_colour(kind: str) -> tuple:
    for key, colour in LINK_COLOURS.items():
        if key in kind:
            return colour
    return (160, 160, 160)


def _header_colour(node: dict) -> tuple:
    if node["type"] in ("Note", "MarkdownNote"):
        return (110, 95, 30)
    return next((colour for key, colour in HEADER_COLOURS.items() if key in node["type"]), (70, 70, 70))


def _bezier(start, end, steps: int = 24) -> list:
    (x0, y0), (x3, y3) = start, end
    bend = max(20.0, abs(x3 - x0) * 0.5)
    x1, x2 = x0 + bend, x3 - bend
    points = []
    for i in range(steps + 1):
        t = i / steps
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3
        points.append((a * x0 + b * x1 + c * x2 + d * x3, a * y0 + b * y0 + c * y3 + d * y3))
    return points


def _wrap(draw, text: str, font, width: float) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + ([line] if line else [])


def render_thumbnail(workflow: dict, title: str, description: str = "") -> Image.Image:
    nodes = {node["id"]: node for node in workflow["nodes"]}
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((SIZE / 2, 28), title, fill=(240, 240, 240), anchor="mm", font=ImageFont.load_default(size=26))
    caption_font = ImageFont.load_default(size=17)
    caption = _wrap(draw, description, caption_font, SIZE - 32)
    if len(caption) > MAX_CAPTION_LINES:
        raise ValueError(f"the description {description!r} takes {len(caption)} lines on the thumbnail; "
                         f"shorten it to {MAX_CAPTION_LINES}")
    for row, line in enumerate(caption):
        draw.text((SIZE / 2, 60 + 21 * row), line, fill=(200, 200, 200), anchor="mm", font=caption_font)
    left = min(node["pos"][0] for node in nodes.values())
    top = min(node["pos"][1] for node in nodes.values())
    right = max(node["pos"][0] + node["size"][0] for node in nodes.values())
    bottom = max(node["pos"][1] + node["size"][1] for node in nodes.values())
    header, margin = 56 + 21 * len(caption) + (6 if caption else 0), 14
    scale = min((SIZE - 2 * margin) / (right - left), (SIZE - header - margin) / (bottom - top))
    offset_x = (SIZE - (right - left) * scale) / 2
    offset_y = header + (SIZE - header - margin - (bottom - top) * scale) / 2

    def at(x, y):
        return offset_x + (x - left) * scale, offset_y + (y - top) * scale

    bar = max(6.0, 26 * scale)
    slot_gap = max(4.0, 20 * scale)

    def socket(node, index, output):
        x = node["pos"][0] + (node["size"][0] if output else 0)
        return at(x, node["pos"][1])[0], at(0, node["pos"][1])[1] + bar + slot_gap * (index + 0.5)

    for node in nodes.values():
        x0, y0 = at(*node["pos"])
        x1, y1 = at(node["pos"][0] + node["size"][0], node["pos"][1] + node["size"][1])
        note = node["type"] in ("Note", "MarkdownNote")
        draw.rounded_rectangle((x0, y0, x1, y1), radius=5, fill=NOTE_BODY if note else NODE_BODY)
        draw.rounded_rectangle((x0, y0, x1, y0 + bar), radius=5, fill=_header_colour(node))
        font = ImageFont.load_default(size=max(7, int(bar * 0.55)))
        label = node_label(node)
        while len(label) > 4 and draw.textlength(label, font=font) > (x1 - x0) - 8:
            label = label[:-2] + "…"
        draw.text((x0 + 4, y0 + bar / 2), label, fill=NODE_TEXT, anchor="lm", font=font)
        if note:  # a few grey lines stand for the note's text
            for row in range(int((y1 - y0 - bar - 6) // 9)):
                width = (x1 - x0 - 12) * (0.55 + 0.4 * ((row * 37) % 10) / 10)
                y = y0 + bar + 8 + row * 9
                draw.line((x0 + 6, y, x0 + 6 + width, y), fill=(150, 140, 100), width=2)
    for _, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        start = socket(nodes[origin], origin_slot, output=True)
        end = socket(nodes[target], target_slot, output=False)
        draw.line(_bezier(start, end), fill=_link_colour(str(kind)), width=2)
        for x, y in (start, end):
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=_link_colour(str(kind)))
    return image
