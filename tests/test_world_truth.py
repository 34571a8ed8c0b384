"""The world's truth labels, checked without the code that wrote them.

Each image written by `silkie world make` is read back as pixels; the shapes are found by colour
and told apart by how much of their bounding box they fill (a square fills it, a circle about
pi/4 of it, a triangle about half). The questions are read with hand-written patterns, and the
answer they should have is worked out from those pixels. A flipped yes/no label, a wrong count or
a colour taken from the wrong shape fails here, whatever `tasks.py` believes.
"""

import json
import re

import numpy as np
from PIL import Image

from silkie.cli import main

# Written out here, not imported: the check must not share its facts with the code it checks.
PALETTE = {"red": (215, 38, 38), "green": (34, 160, 60), "blue": (40, 80, 220), "yellow": (235, 195, 20),
           "purple": (135, 55, 175)}
CELL_NAMES = {"top left": (0, 0), "top": (0, 1), "top right": (0, 2), "left": (1, 0), "center": (1, 1),
              "right": (1, 2), "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2)}
WHERE = r"(?:at the|on the|in the) (top left|top right|bottom left|bottom right|top|bottom|left|right|center)"
NUMBERS = {"1": 1, "2": 2, "3": 3, "4": 4}
CENTRES = (0.18, 0.5, 0.82)  # of the side; a shape reaches 0.14 of the side from its centre, plus 2 px of jitter


def things_in(path) -> set[tuple[str, str, int, int]]:
    """(colour, shape, row, column) of every shape the picture shows."""
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    side = pixels.shape[0]
    found = set()
    for colour, rgb in PALETTE.items():
        mask = np.abs(pixels - np.array(rgb)).sum(axis=2) < 40
        for row in range(3):
            for col in range(3):
                y, x, reach = int(CENTRES[row] * side), int(CENTRES[col] * side), int(0.14 * side) + 3
                cell = mask[max(y - reach, 0):y + reach + 1, max(x - reach, 0):x + reach + 1]
                if cell.sum() < 60:  # no shape of this colour here
                    continue
                ys, xs = np.nonzero(cell)
                fill = cell.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
                shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
                found.add((colour, shape, row, col))
    return found


def expected_yes(question: str, things: set) -> bool:
    """Whether the honest answer to one of the world's yes/no questions is yes, given the pixels."""
    question = question.removesuffix(" Please answer yes or no.")
    if m := re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", question):
        return any((c, s) == m.groups() for c, s, _, _ in things)
    if m := re.fullmatch(r"(?:Is|Are) there (\d) shapes? in the image\?", question):
        return len(things) == NUMBERS[m.group(1)]
    if m := re.fullmatch(rf"Is the (\w+) {WHERE} (\w+)\?", question):
        shape, where, colour = m.groups()
        return (colour, shape, *CELL_NAMES[where]) in things
    if m := re.fullmatch(rf"Is the (\w+) (\w+) {WHERE} of the image\?", question):
        colour, shape, where = m.groups()
        return (colour, shape, *CELL_NAMES[where]) in things
    raise AssertionError(f"a yes/no question this check cannot read: {question!r}")


def test_every_label_agrees_with_the_pixels(tmp_path):
    assert main(["world", "make", "--n", "400", "--seed", "11", "--out", str(tmp_path)]) == 0
    records = [json.loads(line) for line in (tmp_path / "instructions.jsonl").read_text().splitlines()]
    kinds = {"yesno": 0, "count": 0, "color": 0, "position": 0}
    for record in records:
        things = things_in(tmp_path / record["image"])
        task, answer, prompt = record["meta"]["task"], record["meta"]["answer"], record["prompt"]
        assert 1 <= len(things) <= 4, (record["id"], things)
        if task == "yesno":
            assert answer == ("Yes" if expected_yes(prompt, things) else "No"), (record["id"], prompt, things)
        elif task == "count":
            shape = re.fullmatch(r"How many (\w+?)s? are there in the image\?", prompt).group(1)
            n = len(things) if shape == "shape" else sum(s == shape for _, s, _, _ in things)
            assert re.search(rf"\b{n if n else 'no'} {shape}", answer), (record["id"], answer, things)
        elif task == "color":
            m = re.fullmatch(rf"What color is the (\w+)(?: {WHERE})?\?", prompt)
            shape, where = m.groups()
            colours = {c for c, s, r, k in things if s == shape and (where is None or (r, k) == CELL_NAMES[where])}
            assert len(colours) == 1 and answer.endswith(f" is {colours.pop()}."), (record["id"], answer, things)
        elif task == "position":
            colour, shape = re.fullmatch(r"Where is the (\w+) (\w+) in the image\?", prompt).groups()
            cells = [(r, k) for c, s, r, k in things if (c, s) == (colour, shape)]
            where = re.search(WHERE, answer).group(1)
            assert cells == [CELL_NAMES[where]], (record["id"], answer, things)
        else:
            continue
        kinds[task] += 1
    assert min(kinds.values()) >= 30, kinds  # every kind of label was really checked
