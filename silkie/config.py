"""Configs: the one loader for every YAML kind (pool, judge, train, pipeline) and for `--set KEY=VALUE`.

A config is a dataclass. `load(cls, kind, name)` reads `configs/<kind>/<name>.yaml` (or a YAML
file), applies dotted overrides, and builds the dataclass with every key checked: unknown keys,
wrong types, and the bounds and choices a field declares in its metadata
(`field(default=0.0, metadata={"range": (0, 1)})`, `metadata={"choices": (...)}`), then the
config's own `validate()` for what spans several keys. So a typo stops a run when it is loaded,
naming the file and the key, not when the stage that reads the key starts.

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


def parse_set(items: list[str] | None) -> dict:
    """`key=value` strings -> {key: YAML value} (so `loss_type=[sigmoid,sft]` is a list, `bf16=false` a
    bool); dashes in keys become underscores, dots stay (they address nested keys)."""
    import yaml

    from silkie import InputError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set takes key=value, got {item!r}")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML 1.1 reads 1e-5 (no dot) as text; a number is meant
            try:
                parsed = float(parsed) if parsed.strip().lower() not in ("nan", "inf", "-inf", "infinity") else parsed
            except ValueError:
                pass
        out[key.strip().replace("-", "_")] = parsed
    return out


def apply_overrides(data: dict, overrides: dict | None) -> dict:
    """Dotted keys ({"dataset.judge_noise": 0.2}) set nested values; None values are skipped (a flag
    left unset)."""
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, name = key.split(".")
        target = data
        for parent in parents:
            target = target.setdefault(parent, {})
        target[name] = value
    return data


def read_yaml(kind: str, name: str | Path) -> tuple[dict, Path]:
    """(the mapping, its path) of `configs/<kind>/<name>.yaml` or the YAML file `name`; a missing file,
    bad YAML or a file that is not a mapping is one line naming the file."""
    import yaml

    from silkie import InputError

    try:
        path = preset_path(kind, str(name))
    except FileNotFoundError as error:
        raise InputError(str(error)) from None
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(error).split())[:160]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return data, path


def load(cls, kind: str, name: str | Path, overrides: dict | None = None):
    """`configs/<kind>/<name>.yaml` or the YAML file `name`, with `overrides`, as a checked `cls`."""
    data, path = read_yaml(kind, name)
    cfg = from_dict(cls, apply_overrides(data, overrides), str(path))
    if hasattr(cfg, "validate"):
        cfg.validate(str(path))
    return cfg


def named(where: str, check, *args) -> None:
    """Run `check(*args)`; an InputError (or a missing preset) it raises is prefixed with `where`, the
    file and key that led to it."""
    from silkie import InputError

    try:
        check(*args)
    except (InputError, FileNotFoundError) as error:
        raise InputError(f"{where}: {error}") from None


def check_fields(cfg, where: str) -> None:
    """The bounds and choices `cfg`'s fields declare in their metadata."""
    import dataclasses

    from silkie import InputError

    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None:
            continue
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            known = ", ".join(map(str, f.metadata["choices"]))
            raise InputError(f"{_key(where, f.name)}: {value!r} is not one of {known}")
        low, high = f.metadata.get("range", (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise InputError(f"{_key(where, f.name)}: must be {bounds}, got {value!r}")


def _key(where: str, name: str) -> str:
    """`file.yaml: key`, then `key.sub` below it: where a message points."""
    return f"{where}: {name}" if where.endswith((".yaml", ".yml")) else f"{where}.{name}"


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
    """Build dataclass `cls` from a YAML mapping, naming any unknown, mistyped or out-of-range key in
    one line.

    Nested dataclass fields are built recursively, as are lists and string-keyed maps of them;
    everything else is taken as written.
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
            value = from_dict(hint, value, _key(where, name))
        elif typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            if not isinstance(value, list):
                raise InputError(f"{_key(where, name)}: expected a list")
            value = [from_dict(typing.get_args(hint)[0], v, f"{_key(where, name)}[{i}]") for i, v in enumerate(value)]
        elif typing.get_origin(hint) is dict and dataclasses.is_dataclass(typing.get_args(hint)[-1]):
            if not isinstance(value, dict):
                raise InputError(f"{_key(where, name)}: expected a mapping")
            kind = typing.get_args(hint)[-1]
            value = {k: from_dict(kind, v or {}, f"{_key(where, name)}.{k}") for k, v in value.items()}
        elif not _scalar_ok(hint, value):
            raise InputError(f"{_key(where, name)}: expected {getattr(hint, '__name__', hint)}, got {value!r:.40}")
        values[name] = value
    try:
        cfg = cls(**values)
    except TypeError as error:  # a required key is missing
        raise InputError(f"{where}: {error}") from None
    check_fields(cfg, where)
    return cfg


# --- command lines generated from the same dataclasses -------------------------------------------------------
# A field whose metadata has "help" is a flag: `--field-name` (and `--field_name`), typed from its annotation,
# its help text and choices from the field, so a flag cannot drift from the key it sets. Metadata may add
# "flag" (another primary spelling, e.g. "--source" for `sources`), "aliases", "metavar", "positional",
# "append" (a repeatable flag collecting a list), "parse" (a function from the text to the value) and
# "required". Flags left out are None in the namespace, so they never replace a preset's value.
# Not HfArgumentParser: it has no repeatable flags or positionals and passes every metadata key to argparse.


def add_flags(parser, cls, skip: tuple = ()) -> None:
    """Add a flag to `parser` for every field of dataclass `cls` that carries help text."""
    import dataclasses
    import types
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta or f.name in skip:
            continue
        hint = hints[f.name]
        options = [a for a in typing.get_args(hint) if a is not type(None)] \
            if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else [hint]
        kind = options[0] if len(options) == 1 else str
        kwargs = {"help": meta["help"], "default": None}
        for key in ("metavar", "choices"):
            if key in meta:
                kwargs[key] = meta[key]
        if meta.get("positional"):
            names = [f.name]
            kwargs.pop("default")
        else:
            primary = meta.get("flag", "--" + f.name.replace("_", "-"))
            names = [primary, *meta.get("aliases", ()), *({"--" + f.name} - {primary} if "_" in f.name else ())]
            kwargs["required"] = meta.get("required", False)
        if kind is bool and not meta.get("positional"):
            kwargs["action"] = "store_const"
            kwargs["const"] = True
        else:
            element = typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind
            kwargs["type"] = meta.get("parse") or (element if element in (int, float) else str)
            if meta.get("append"):
                kwargs["action"] = "append"
        parser.add_argument(*names, dest=f.name, **kwargs)


def given_flags(cls, namespace) -> dict:
    """The fields of `cls` a command line set, by name (flags left out are not there)."""
    import dataclasses

    return {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)
            if "help" in f.metadata and getattr(namespace, f.name, None) is not None}
