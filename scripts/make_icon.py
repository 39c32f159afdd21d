"""Draws the pack's icon (docs/icon.png, 256x256; pyproject.toml [tool.comfy] Icon points at it):
an eye (the first-person view) and a person in a viewfinder (the third-person view) joined by a
two-way arrow. Drawn at 4x and scaled down for smooth edges.

    python scripts/make_icon.py
"""
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
SIZE, SCALE = 256, 4
BACKGROUND, EGO, EXO, ARROW = (29, 36, 48), (79, 209, 197), (246, 173, 85), (226, 232, 240)


def quadratic(p0, p1, p2, steps=48):
    return [((1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * p1[0] + t ** 2 * p2[0],
             (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * p1[1] + t ** 2 * p2[1]) for t in (i / steps for i in range(steps + 1))]


def draw_icon() -> Image.Image:
    s = SCALE
    image = Image.new("RGBA", (SIZE * s, SIZE * s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)

    def pts(points):
        return [(x * s, y * s) for x, y in points]

    def line(points, colour, width):
        draw.line(pts(points), fill=colour, width=width * s, joint="curve")
        for x, y in (points[0], points[-1]):  # round caps
            r = width * s / 2
            draw.ellipse((x * s - r, y * s - r, x * s + r, y * s + r), fill=colour)

    draw.rounded_rectangle((8 * s, 8 * s, 248 * s, 248 * s), radius=40 * s, fill=BACKGROUND)
    # first-person view: an eye
    outline = quadratic((28, 104), (70, 58), (112, 104)) + quadratic((112, 104), (70, 150), (28, 104))[1:]
    line(outline, EGO, 8)
    draw.ellipse(((70 - 15) * s, (104 - 15) * s, (70 + 15) * s, (104 + 15) * s), fill=EGO)
    # third-person view: a person in a viewfinder
    for corner in (((150, 72), (150, 56), (166, 56)), ((216, 56), (232, 56), (232, 72)),
                   ((232, 136), (232, 152), (216, 152)), ((166, 152), (150, 152), (150, 136))):
        line(list(corner), EXO, 7)
    draw.ellipse(((191 - 13) * s, (82 - 13) * s, (191 + 13) * s, (82 + 13) * s), fill=EXO)
    body = quadratic((170, 140), (170, 100), (191, 100)) + quadratic((191, 100), (212, 100), (212, 140))[1:]
    draw.polygon(pts(body), fill=EXO)
    # the translation, both ways
    line(quadratic((62, 172), (128, 228), (194, 172)), ARROW, 8)
    line([(180, 164), (196, 170), (192, 186)], ARROW, 8)
    line([(76, 164), (60, 170), (64, 186)], ARROW, 8)
    return image.resize((SIZE, SIZE), Image.LANCZOS)


if __name__ == "__main__":
    path = REPO / "docs" / "icon.png"
    draw_icon().save(path, optimize=True)
    print(f"wrote {path}")
