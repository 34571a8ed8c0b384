"""What the Space serves (a base model, Silkie, a dataset), what its paid judge may spend, and
where each setting comes from.

Every reference is a local path or a Hub id. One precedence for all settings: the defaults (what
`silkie run` leaves in runs/mini), then a JSON settings file (what `silkie space --export` writes
beside an exported app.py), then the environment, then the caller's arguments.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

from silkie import InputError, one_line
from silkie.layout import RunLayout

__all__ = ["RUN", "WORLD_BASE", "SETTINGS_FILE", "ENVIRONMENT", "COUNTS", "Settings", "settings",
           "read_settings_file", "run_folder", "on_hub", "reachable", "is_adapter", "base_of", "world_name", "shown"]

RUN = "runs/mini"  # what `silkie run` leaves by default
WORLD_BASE = "world:mini-base"
SETTINGS_FILE = "silkie_space.json"  # beside an exported app.py
ENVIRONMENT = {"base": "SILKIE_BASE_MODEL", "adapter": "SILKIE_ADAPTER", "dataset": "SILKIE_DATASET",
               "judge_calls_per_visitor": "SILKIE_JUDGE_CALLS_PER_VISITOR",
               "judge_calls_per_day": "SILKIE_JUDGE_CALLS_PER_DAY"}
COUNTS = ("judge_calls_per_visitor", "judge_calls_per_day")  # whole numbers; the other settings name things
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass
class Settings:
    """What the Space serves: each a local path or a Hub id; None serves nothing and the page says so."""
    base: str | None = None  # None: the adapter's base, else world:mini-base
    adapter: str | None = str(RunLayout(RUN).adapter)  # a LoRA adapter, or a merged Silkie model
    dataset: str | None = str(RunLayout(RUN).dataset)
    run: str | None = None  # the run folder whose scenes the scene judge knows; None: the adapter's run
    timeout: float = 60.0  # seconds one answer may take, and the longest wait for the model
    # The OpenAI-compatible judge is paid per call, so calls are counted: one visitor may make this
    # many in any hour, and all visitors together that many in any 24 hours. A call is one request
    # (two when the reply must be re-asked) of bounded size: a question of MAX_PROMPT_CHARS, answers
    # of MAX_ANSWER_CHARS, an image of at most the judge's max_image_side, the judge's max_new_tokens.
    # The scene judge is free and not counted.
    judge_calls_per_visitor: int = 10
    judge_calls_per_day: int = 200

    def __post_init__(self):
        for name in COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be a whole number of judge calls, 0 or more (0: no OpenAI judge); "
                                 f"got {value!r}")


def settings(run=None, base=None, adapter=None, dataset=None, file=None) -> Settings:
    """Defaults, then the settings `file` (if it exists), then the ENVIRONMENT variables
    (SILKIE_BASE_MODEL, SILKIE_ADAPTER, ...), then the arguments (`run` stands for
    RUN/train/adapter and RUN/vlfeedback). An empty reference means "none"."""
    chosen = {"base": None, "adapter": Settings.adapter, "dataset": Settings.dataset, "run": None}
    if file is not None and Path(file).is_file():
        chosen.update(read_settings_file(file))
    for key, name in ENVIRONMENT.items():
        if name in os.environ:
            chosen[key] = _count(name, os.environ[name]) if key in COUNTS else os.environ[name]
    if run is not None:
        layout = RunLayout(run)
        chosen.update(adapter=str(layout.adapter), dataset=str(layout.dataset), run=str(run))
    for key, value in (("base", base), ("adapter", adapter), ("dataset", dataset)):
        if value is not None:
            chosen[key] = value
    return Settings(**{key: value if key in COUNTS else value or None for key, value in chosen.items()})


def _count(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{name} must be a whole number of judge calls, got {text[:40]!r}") from None


def read_settings_file(file) -> dict:
    """The settings a JSON file gives. A value naming a folder beside the file (an exported Space's
    own copy of the adapter or the dataset) resolves there, wherever the Space runs from."""
    file = Path(file)
    try:
        values = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the Space settings {file}: {one_line(error)[:200]}") from None
    known = {field.name for field in fields(Settings)} - {"timeout"}
    if (not isinstance(values, dict) or set(values) - known  # a typo must not silently serve the default
            or not all(isinstance(value, int) if key in COUNTS else value is None or isinstance(value, str)
                       for key, value in values.items())):
        raise InputError(f"{file} must be a JSON object with keys among {sorted(known)}: whole numbers for "
                         f"{', '.join(COUNTS)}, strings (or null) for the others")
    for key, value in values.items():
        if key not in COUNTS and value and (file.parent / value).exists():
            values[key] = str(file.parent / value)
    return values


def run_folder(config: Settings) -> Path | None:
    """The run whose instructions the scene judge reads: `config.run`, else the run the adapter sits
    in when it is where `silkie run` writes it (RUN/train/adapter)."""
    if config.run:
        return Path(config.run)
    if config.adapter and not on_hub(config.adapter) and Path(config.adapter).parent.name == "train":
        return Path(config.adapter).parent.parent
    return None


def on_hub(ref: str) -> bool:
    """Shaped like a Hub id and not a local path (only loading can tell whether it exists)."""
    return HUB_ID.fullmatch(ref) is not None and not ref.startswith(".") and not Path(ref).exists()


def reachable(ref: str) -> bool:
    return Path(ref).exists() or on_hub(ref)


def is_adapter(ref: str) -> bool:
    """A LoRA adapter (adapter_config.json at its top), not a full model such as `silkie export
    --merge` writes. A Hub repo that cannot be asked counts as an adapter: loading it says why."""
    if not on_hub(ref):
        return (Path(ref) / "adapter_config.json").is_file()
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        hf_hub_download(ref, "adapter_config.json")
    except RemoteEntryNotFoundError:
        return False
    except Exception:  # noqa: BLE001 - no such repo, no network
        return True
    return True


def base_of(silkie: str, merged: bool = False) -> str:
    """The base Silkie was trained from: the run's train_config.yaml names it as the user did
    (world:NAME, not this machine's path to it); else the adapter's own config, which a merged
    model keeps beside its weights in adapter/."""
    from peft import PeftConfig

    from silkie.layout import adapter_base

    local = adapter_base(silkie) if Path(silkie).is_dir() else None
    if local:
        return world_name(local)
    try:
        if merged and not on_hub(silkie) and not (Path(silkie) / "adapter" / "adapter_config.json").is_file():
            raise ValueError("a local folder: no need to ask the Hub")
        return world_name(PeftConfig.from_pretrained(silkie, subfolder="adapter" if merged else None)
                          .base_model_name_or_path)
    except (OSError, ValueError) as error:  # no such adapter, no network
        if merged:
            raise InputError(f"cannot tell the base of the merged model {silkie} (no adapter/adapter_config.json "
                             "beside it): set SILKIE_BASE_MODEL or --base") from None
        raise InputError(f"cannot read the adapter config of {silkie}: {one_line(error)[:200]}") from None


def world_name(model: str) -> str:
    """A path into the shipped mini pool as world:NAME, which resolves on any install."""
    from silkie.chat import WORLD_POOL, WORLD_PREFIX

    path = Path(model)
    return f"{WORLD_PREFIX}{path.name}" if path.is_dir() and path.resolve().parent == WORLD_POOL.resolve() else model


def shown(ref: str) -> str:
    """A model as the page names it: a Hub id or world:NAME as is, a local path by its last parts only."""
    return ref if on_hub(ref) or ref.startswith("world:") else "/".join(Path(ref).parts[-3:])
