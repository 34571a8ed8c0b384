"""Where the shipped presets live, resolved in one place for a checkout and an installed wheel alike.

`configs/` sits at the top of the repo; `silkie/resources/configs` links to it, and a wheel build
copies it in as package data, so the same path works after `pip install -e .` and `pip install .`.
"""

from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).parent / "resources"


def preset_path(kind: str, name: str) -> Path:
    """`configs/<kind>/<name>.yaml`, or `name` itself when it is a path to an existing file."""
    if Path(name).is_file():
        return Path(name)
    path = RESOURCES / "configs" / kind / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (RESOURCES / "configs" / kind).glob("*.yaml"))
        raise FileNotFoundError(f"no {kind} preset {name!r}; known: {', '.join(known) or 'none'}")
    return path
