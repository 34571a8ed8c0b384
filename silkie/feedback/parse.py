"""Reading a judge's reply into ratings: tolerant of layout, strict about meaning.

Judges drift from the layout they are asked for: bold or missing headers, "Response 2" for
"Text 2", the aspect named on the rating line, stray prose, a JSON answer. The parser follows a
reply line by line and fills a grid of (text, aspect) cells, inferring what a line leaves out from
where it stands. Ratings are read, never coerced: "4/5", "**4**" and "4 (Helpful)" mean 4, but
"10", "0", "4.5", "3-4", "7/10" and "N/A" are kept as written and count as invalid (see
`silkie.schema.rating_value`). A cell with no rating line at all is *missing*: that makes the
reply unparseable, which earns it one re-ask.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from silkie.schema import ASPECTS, rating_value

# Words that name an aspect in a header or on a rating line, checked in this order.
ASPECT_WORDS = {"Visual Faithfulness": ("faithful", "visual", "hallucinat"),
                "Ethical Considerations": ("ethic", "safety", "harm"),
                "Helpfulness": ("helpful",)}
_EMPHASIS = re.compile(r"[*`]+")
_LEAD = re.compile(r"^[\s#>|]*(?:(?:[-+•]|\d+[.)])\s+)?")  # heading marks, quotes, bullets, "1." numbering
_TEXT = re.compile(r"^<?\s*(?:output\s+for\s+|for\s+)?(?:text|response|answer)\s*#?\s*(\d+)\s*>?\s*[:.)\-–]?\s*(.*)$",
                   re.I)
_RATING = re.compile(r"^(?:(?P<aspect>[a-z][a-z ]{0,40}?)\s+)?(?:rating|score)\s*(?:\(\s*1\s*-\s*5\s*\))?\s*[:=]\s*"
                     r"(?P<value>.*)$", re.I)
_ASPECT_VALUE = re.compile(r"^(?P<aspect>[a-z][a-z ]{0,40}?)\s*[:=\-–]\s*(?P<value>\d.*)$", re.I)
_RATIONALE = re.compile(r"^(?:rationale|reason|reasoning|explanation|justification)\s*[:=]\s*(.*)$", re.I)
_INLINE_RATIONALE = re.compile(r"[\s;,.|-]*\b(?:rationale|reason|explanation|justification)\s*:\s*", re.I)
_ASPECT_NAMES = {"helpfulness", "ethical considerations", "ethics", "safety", "visual faithfulness", "faithfulness"}
_NUMBER = re.compile(r"(\d+)(?:\s*(?:/|out of)\s*(\d+))?", re.I)


@dataclass
class Parsed:
    """Per text, in the order shown: {aspect: {"Rating": str, "Rationale": str}}; cells the reply
    never rated hold empty strings and are listed in `missing` as (text number, aspect)."""
    ratings: list[dict]
    missing: list[tuple[int, str]] = field(default_factory=list)

    @property
    def problem(self) -> str:
        """One line for the re-ask and the error field."""
        cells = ", ".join(f"Text {i} {aspect}" for i, aspect in self.missing[:4])
        more = f" and {len(self.missing) - 4} more" if len(self.missing) > 4 else ""
        return f"no rating found for {cells}{more}"


def aspect_of(text: str, aspects=ASPECTS) -> str | None:
    lowered = text.lower()
    return next((a for a, words in ASPECT_WORDS.items() if a in aspects and any(w in lowered for w in words)), None)


def read_rating(value: str) -> tuple[str, str]:
    """(rating as stored, the text after it). A plain 1-5 reading comes back as its digits;
    anything else comes back whole, as written, for `rating_value` to reject."""
    value = value.strip().strip("[]*_` ")
    match = _NUMBER.match(value)
    if not match:
        return value, ""
    after = value[match.end():]
    # "4.5", "3-4", "4,5": the number goes on, so it is not a rating on our scale.
    if re.match(r"\s*(?:[.,]\d|-\s*\d)", after) or (match.group(2) and match.group(2) != "5"):
        return value, ""
    rest = after.strip().lstrip(".:;,-–— ")
    return match.group(1), rest[1:-1] if rest.startswith("(") and rest.endswith(")") else rest


class _Grid:
    def __init__(self, n: int, aspects):
        self.n, self.aspects = n, tuple(aspects)
        self.cells: dict[tuple[int, str], dict] = {}

    def free(self, text: int | None, aspect: str | None) -> tuple[int, str] | None:
        """The cell a rating belongs to: the one named, else the first unrated one that fits."""
        if text is not None and aspect is not None:
            return (text, aspect) if (text, aspect) not in self.cells else None
        for a in ([aspect] if aspect else self.aspects):
            for t in ([text] if text else range(1, self.n + 1)):
                if (t, a) not in self.cells:
                    return t, a
        return None

    def result(self) -> Parsed:
        ratings, missing = [], []
        for t in range(1, self.n + 1):
            row = {}
            for a in self.aspects:
                cell = self.cells.get((t, a))
                if cell is None:
                    missing.append((t, a))
                    cell = {"Rating": "", "Rationale": ""}
                row[a] = {"Rating": cell["Rating"], "Rationale": " ".join(cell["Rationale"].split())}
            ratings.append(row)
        missing.sort(key=lambda c: (self.aspects.index(c[1]), c[0]))
        return Parsed(ratings, missing)


def parse_reply(text: str, n: int, aspects=ASPECTS) -> Parsed:
    """Ratings for n texts on `aspects` from a reply in the paper's layout, a near miss, or JSON."""
    if "{" in text:
        parsed = _parse_json(text, n, aspects)
        if parsed is not None:
            return parsed
    return _parse_lines(text, n, aspects)


def _is_header(raw: str, line: str) -> bool:
    """A short line set apart as a heading, not a sentence of prose that names an aspect."""
    if len(line.split()) > 6 or line.endswith("."):
        return False
    bare = line.lower().strip(" :")
    return (raw.lstrip().startswith(("#", "*", "_")) or line.endswith(":") or "assessment" in bare
            or "aspect" in bare or bare in _ASPECT_NAMES)


def _parse_lines(text: str, n: int, aspects) -> Parsed:
    grid = _Grid(n, aspects)
    aspect = number = None  # the section and the text the last headers named
    fresh = False  # a text marker seen since the last rating: an aspect header below it is a sub-header
    target = None  # the cell a rationale line belongs to; None: the next rating's
    pending, reading = "", False  # a rationale seen before its rating; inside a rationale
    for raw in text.splitlines():
        line = _LEAD.sub("", _EMPHASIS.sub("", raw)).strip()
        if not line:
            reading = reading and not (grid.cells[target]["Rationale"] if target else pending)
            continue
        marker = _TEXT.match(line)
        if marker and 1 <= int(marker.group(1)) <= n:
            number, fresh, target, reading = int(marker.group(1)), True, None, False
            line = marker.group(2).strip()
            if not line:
                continue
            if line[0].isdigit():  # "Text 2: 4 - misses the dog": a bare rating after the marker
                line = "Rating: " + line
        rating = _RATING.match(line) or _ASPECT_VALUE.match(line)
        label = (rating.group("aspect") or "").strip().lower() if rating else ""
        named = aspect_of(label, aspects) if label else None
        if rating and (named or (rating.re is _RATING and label in ("", "final"))):
            value, rationale = (_INLINE_RATIONALE.split(rating.group("value"), maxsplit=1) + [""])[:2]
            value, rest = read_rating(value)
            cell, fresh = grid.free(number, named or aspect), False
            if cell is None:
                target, reading = None, False  # a repeat (a closing summary, say): the first one stands
                continue
            grid.cells[cell] = {"Rating": value, "Rationale": rationale or pending, "rest": rest}
            target, pending, reading = cell, "", bool(rationale or pending)
            continue
        explained = _RATIONALE.match(line)
        if explained:
            reading = True
            if target:
                grid.cells[target]["Rationale"] = explained.group(1)
            else:
                pending = explained.group(1)
            continue
        header = aspect_of(line, aspects) if _is_header(raw, line) else None
        if header:
            if not fresh:  # a new section, not a heading inside one text's block
                number = None
            aspect, target, reading = header, None, False
        elif reading:
            if target:
                grid.cells[target]["Rationale"] += " " + line
            else:
                pending += " " + line
    for cell in grid.cells.values():  # "Rating: 4 - clear and correct" with no Rationale line
        if not cell["Rationale"].strip():
            cell["Rationale"] = cell["rest"]
    return grid.result()


def _parse_json(text: str, n: int, aspects) -> Parsed | None:
    start, end = text.find("{"), text.rfind("}")
    try:
        data = json.loads(text[start:end + 1])
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    grid = _Grid(n, aspects)
    for key, column in data.items():
        aspect = aspect_of(str(key), aspects)
        if aspect is None:
            continue
        entries = list(column.values()) if isinstance(column, dict) else column if isinstance(column, list) else []
        for position, entry in enumerate(entries, start=1):
            if not isinstance(entry, dict):
                continue
            number = entry.get("text")
            number = number if isinstance(number, int) and 1 <= number <= n else position
            if number > n or (number, aspect) in grid.cells:
                continue
            value = entry.get("rating")
            rating = "" if value is None else read_rating(str(value))[0]
            grid.cells[number, aspect] = {"Rating": rating, "Rationale": str(entry.get("rationale") or "")}
    return grid.result() if grid.cells else None


# ---- does a rationale agree with its rating? --------------------------------------------------

_GOOD = ("accurate", "accurately", "correct", "correctly", "excellent", "comprehensive", "thorough", "precise",
         "perfect", "perfectly", "faithful", "fully", "complete", "completely", "detailed")
_BAD = ("inaccurate", "incorrect", "incorrectly", "wrong", "fails", "failed", "irrelevant", "hallucinates",
        "hallucinated", "hallucination", "hallucinations", "fabricated", "fabricates", "invents", "invented",
        "misleading", "harmful", "unhelpful", "nonsensical", "contradicts", "misidentifies", "unsafe", "poor")
_NEGATION = re.compile(r"(?:\b(?:no|not|never|without|nor|free of|lacks?)|n't)\s+(?:[\w-]+\s+){0,2}$")
_SAID = re.compile(r"(?:\b(?:rating|score)\s*(?:of|is|:)?|\b(?:rated|deserves|merits|warrants)\s+(?:an?\s+)?)"
                   r"\s*\b(\d+)\b(?!\s*%)|\b(\d+)\s*(?:/|out of)\s*5\b", re.I)


def contradiction(rating: str, rationale: str) -> str | None:
    """Why a valid rating and its rationale disagree, or None. A heuristic, reported and never
    acted on: the rationale names another score, or its tone is one-sided against the rating."""
    value = rating_value(rating)
    if value is None or not rationale:
        return None
    said = _SAID.search(rationale)
    if said and int(said.group(1) or said.group(2)) != value:
        return f"rated {value} but the rationale says {said.group(1) or said.group(2)}"
    lowered = rationale.lower()
    good = bad = 0
    for match in re.finditer(r"[a-z']+", lowered):
        word = match.group()
        if word in _GOOD or word in _BAD:
            if _NEGATION.search(lowered[max(0, match.start() - 24):match.start()]):
                continue  # "no hallucinations", "not accurate": read no tone from it
            good += word in _GOOD
            bad += word in _BAD
    if value >= 4 and bad >= 2 and not good:
        return f"rated {value} but the rationale only finds fault"
    if value <= 2 and good >= 2 and not bad:
        return f"rated {value} but the rationale only praises"
    return None
