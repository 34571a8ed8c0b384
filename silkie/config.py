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


def _scalar_ok(hint, value) -> bool:
    """Whether a YAML scalar fits a simple annotation (int, float, str, bool, or one of them | None)."""
    import types
    import typing

    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return True
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option in (str, bool) and isinstance(value, option):
            return True
        if option not in (int, float, str, bool, type(None)):
            return True  # containers and the like: taken as written
    return False


def from_dict(cls, data, where: str):
    """Build dataclass `cls` from a YAML mapping, naming any unknown or mistyped key in one line.

    Nested dataclass fields are built recursively; everything else is taken as written.
    """
    import dataclasses
    import typing

    from silkie import InputError

    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value, f"{where}.{name}")
        elif typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            if not isinstance(value, list):
                raise InputError(f"{where}.{name}: expected a list")
            value = [from_dict(typing.get_args(hint)[0], v, f"{where}.{name}[{i}]") for i, v in enumerate(value)]
        elif not _scalar_ok(hint, value):
            raise InputError(f"{where}.{name}: expected {getattr(hint, '__name__', hint)}, got {value!r:.40}")
        values[name] = value
    try:
        return cls(**values)
    except TypeError as error:  # a required key is missing
        raise InputError(f"{where}: {error}") from None
