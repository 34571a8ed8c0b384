"""Scenes: a few coloured shapes on a 3x3 grid, drawn from a seed, with their ground truth.

Shapes are large (radius 0.14 of the side, ~2.4 vision patches) because a prototype found shape
recognition, not colour, to be what tiny VLMs struggle with; smaller shapes were not learnable in
minutes on a CPU.
"""

from __future__ import annotations

import io
import random
from dataclasses import asdict, dataclass

from PIL import Image, ImageDraw

IMAGE_SIZE = 140  # pixels per side; (140 / 14)^2 patches / (2x2 merge) = 25 Qwen2-VL image tokens
SUPERSAMPLE = 4  # draw large, then downscale: smooth edges that are the same on every machine
RADIUS = 0.14  # of the side
CENTERS = (0.18, 0.5, 0.82)  # of the side: cells keep a gap between shapes and from the edge

SHAPES = ("circle", "square", "triangle")
COLORS = {
    "red": (215, 38, 38),
    "green": (34, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 195, 20),
    "purple": (135, 55, 175),
}
# Grid cells (row, column) and how people name them.
POSITIONS = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "center", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}
MAX_OBJECTS = 4


@dataclass(frozen=True)
class Thing:
    shape: str
    color: str
    row: int
    col: int

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def position(self) -> str:
        return POSITIONS[(self.row, self.col)]


@dataclass(frozen=True)
class Scene:
    things: tuple[Thing, ...]
    background: tuple[int, int, int]
    jitter: tuple[tuple[int, int], ...]  # pixel offset of each thing inside its cell

    def to_dict(self) -> dict:
        return {"things": [asdict(t) for t in self.things], "background": list(self.background),
                "jitter": [list(j) for j in self.jitter]}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(tuple(Thing(**t) for t in d["things"]), tuple(d["background"]),
                   tuple(tuple(j) for j in d["jitter"]))

    def key(self) -> tuple:
        """What the scene shows, ignoring pixel noise: for held-out overlap checks."""
        return tuple(sorted((t.shape, t.color, t.row, t.col) for t in self.things))


def draw_scene(rng: random.Random) -> Scene:
    """1-4 things, each (colour, shape) at most once so "the red circle" always names one thing."""
    count = rng.randint(1, MAX_OBJECTS)
    kinds = rng.sample([(s, c) for s in SHAPES for c in COLORS], count)
    cells = rng.sample(sorted(POSITIONS), count)
    things = tuple(Thing(s, c, r, k) for (s, c), (r, k) in zip(kinds, cells))
    shade = rng.randint(225, 250)
    background = (shade, shade - rng.randint(0, 8), shade - rng.randint(0, 8))
    jitter = tuple((rng.randint(-2, 2), rng.randint(-2, 2)) for _ in things)
    return Scene(things, background, jitter)


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), scene.background)
    pen = ImageDraw.Draw(image)
    r = RADIUS * big
    for thing, (dx, dy) in zip(scene.things, scene.jitter):
        cx = CENTERS[thing.col] * big + dx * SUPERSAMPLE
        cy = CENTERS[thing.row] * big + dy * SUPERSAMPLE
        fill = COLORS[thing.color]
        if thing.shape == "circle":
            pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif thing.shape == "square":
            h = r * 0.85  # same visual weight as the circle
            pen.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
        else:
            pen.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    return image.resize((size, size), Image.LANCZOS)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)  # no timestamps or metadata: same bytes every run
    return buffer.getvalue()
