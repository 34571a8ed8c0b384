"""The sources `collect` knows, and how one is named on the command line: NAME[OPTIONS][=PATH].

OPTIONS are comma-separated KEY=VALUE pairs in brackets (quote the whole spec in a shell, as for
pip's `"pkg[extra]"`). Every source with a path takes `images=DIR` (its own images root, over
`--images-root`) and `name=LABEL` (what records, ids, quotas and the summary call it);
`jsonl` and `hub` take their field options too (see `generic`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from silkie import InputError
from silkie.sources import comvint, generic, llava, llavar, lrv, m3it, mini, svit, vlsafe
from silkie.sources.base import Problem, SourceItem, Spec

COMMON = ("images", "name")
FIELDS = COMMON + ("prompt", "image", "image_type", "id")


@dataclass(frozen=True)
class Reader:
    read: Callable[[Spec], Iterator[SourceItem | Problem]]
    path: str | None = "file"  # "file": a local file or folder; "dataset": what load_dataset opens; None: none
    options: tuple[str, ...] = COMMON
    shuffle: bool = True  # False for a generated source, which comes in seeded random order already


SOURCES = {
    "llava": Reader(llava.read),
    "svit": Reader(svit.read),
    "llavar": Reader(llavar.read),
    "lrv": Reader(lrv.read),
    "comvint": Reader(comvint.read),
    "m3it": Reader(m3it.read),
    "vlsafe": Reader(vlsafe.read),
    "jsonl": Reader(generic.read_jsonl, options=FIELDS),
    "hub": Reader(generic.read_hub, path="dataset", options=FIELDS + ("split", "config")),
    "mini": Reader(mini.read, path=None, options=(), shuffle=False),
}

LABEL = r"[\w.-]+"  # source names and labels become id prefixes: no spaces, slashes or brackets
_SPEC = re.compile(rf"(?P<name>{LABEL})(?:\[(?P<options>[^\]]*)\])?(?:=(?P<path>.+))?", re.DOTALL)


def _options(text: str | None, name: str, allowed: tuple[str, ...]) -> dict[str, str]:
    options = {}
    for part in filter(None, (text or "").split(",")):
        key, equals, value = (s.strip() for s in part.partition("="))
        if key not in allowed or not equals or not value or (key == "name" and not re.fullmatch(LABEL, value)):
            takes = ", ".join(f"{k}=..." for k in allowed) or "no options"
            raise InputError(f"--source {name}: bad option {part!r}; it takes {takes}")
        options[key] = value
    return options


def parse_source(text: str, images_root: Path | None = None, n: int = 0, seed: int = 0) -> tuple[Spec, Reader]:
    """A `--source` argument as the reader to call and what to call it with."""
    match = _SPEC.fullmatch(text.strip())
    if not match:
        raise InputError(f"--source {text!r}: expected NAME[OPTIONS][=PATH], e.g. llava=llava_instruct_150k.json")
    name, path = match["name"], match["path"]
    reader = SOURCES.get(name)
    if reader is None:
        raise InputError(f"--source {name}: unknown source; known: {', '.join(SOURCES)}")
    options = _options(match["options"], name, reader.options)
    if reader.path is None and path:
        raise InputError(f"--source {name} takes no path")
    if reader.path and not path:
        raise InputError(f"--source {name} needs =PATH (its file or folder, or for hub a dataset id)")
    local = Path(path).expanduser() if path else None
    if reader.path == "file" and not local.exists():
        raise InputError(f"--source {name}: no such file or folder: {local}")
    if "images" in options:
        root = Path(options.pop("images")).expanduser()
    elif images_root or not local or not local.exists():  # a Hub id has no folder to default to
        root = images_root
    else:
        root = local if local.is_dir() else local.parent
    location = path if reader.path == "dataset" else local  # a Hub id is not a local path
    return Spec(name, options.pop("name", name), location, options, root, n, seed), reader


def parse_quota(text: str) -> tuple[str, int]:
    """`--quota NAME=N` as (NAME, N)."""
    name, _, count = text.partition("=")
    if not name.strip() or not count.strip().isdigit():
        raise InputError(f"--quota {text!r}: expected NAME=N with N a whole number, e.g. llava=1000")
    return name.strip(), int(count)
