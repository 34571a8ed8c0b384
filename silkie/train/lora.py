"""LoRA targets: the language model's linear layers and nothing else.

Found by inspecting the model, not by a table per class: the decoder is what `get_decoder()`
returns (Qwen2-VL, Qwen2.5-VL, LLaVA, LLaVA-NeXT, Idefics3 and most transformers VLMs), and the
targets are every `nn.Linear` under it. The result is one regex anchored at the decoder's path, so a
bare name such as `q_proj` can never reach the vision tower's attention (CLIP has one too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from silkie import InputError

VISION_HINTS = ("visual", "vision", "image_encoder", "multi_modal_projector", "mm_projector", "connector", "merger")


@dataclass
class LoraTargets:
    regex: str  # PEFT `target_modules` (full-match regex over module paths)
    modules: list[str]  # the exact module paths it matches
    decoder: str  # the language model's path


def _path_of(model, module) -> str | None:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    return None


def decoder_path(model) -> str:
    decoder = None
    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError):
        pass
    path = _path_of(model, decoder) if decoder is not None and decoder is not model else None
    if not path:
        children = ", ".join(name for name, _ in model.named_children())
        raise InputError(f"cannot find the language model of {type(model).__name__} (top-level modules: {children}); "
                         "set lora_target_modules to a regex over its module paths")
    return path


def matched_modules(model, regex: str) -> list[str]:
    pattern = re.compile(regex)
    return [name for name, module in model.named_modules() if name and pattern.fullmatch(name)
            and not list(module.children())]


def resolve_lora_targets(model, override: str | None = None) -> LoraTargets:
    """The language model's linear layers as one regex; `override` (a regex) replaces the search.

    Raises InputError when nothing matches or anything matched lies outside the language model.
    """
    import torch.nn as nn

    decoder = decoder_path(model) if override is None else _safe_decoder(model)
    if override is None:
        leaves = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if name.startswith(decoder + ".") and isinstance(module, nn.Linear)})
        if not leaves:
            raise InputError(f"no linear layers under {decoder} in {type(model).__name__}; set lora_target_modules")
        regex = rf"{re.escape(decoder)}\..*\.({'|'.join(leaves)})"
    else:
        regex = override
    modules = matched_modules(model, regex)
    if not modules:
        raise InputError(f"lora_target_modules {regex!r} matches no module of {type(model).__name__}")
    outside = [m for m in modules if decoder and not m.startswith(decoder + ".")]
    vision = [m for m in modules if any(part.startswith(VISION_HINTS) for part in m.split("."))]
    if outside or vision:
        bad = (vision or outside)[0]
        raise InputError(f"LoRA would touch {len(set(outside) | set(vision))} modules outside the language model "
                         f"{decoder!r}, e.g. {bad}; the vision tower and projector stay frozen")
    return LoraTargets(regex, modules, decoder)


def _safe_decoder(model) -> str:
    try:
        return decoder_path(model)
    except InputError:
        return ""  # unknown architecture: the override is trusted, the vision-name check still applies


def lora_config(targets: LoraTargets, r: int, alpha: int, dropout: float):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets.regex,
                      bias="none")
