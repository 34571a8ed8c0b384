"""Load a vision-language model (and optionally a LoRA adapter): the one place models are loaded.

Generation backends, evaluation, training, export and the Space all come here. A model is a local
folder, a Hub id (with an optional pinned revision), or `world:NAME` — a model of the mini world's
shipped pool (silkie/world/trained/NAME). This module sits in the bottom layer and imports nothing
of silkie's but its root, so the pool's backends and `silkie.chat` can both build on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from silkie import InputError

WORLD_PREFIX = "world:"
WORLD_POOL = Path(__file__).parent / "world" / "trained"


def resolve(model: str) -> str:
    """A `world:NAME` reference -> its folder; anything else is passed to from_pretrained as is."""
    if not model.startswith(WORLD_PREFIX):
        return model
    path = WORLD_POOL / model[len(WORLD_PREFIX):]
    if not (path / "config.json").is_file():
        known = sorted(p.name for p in WORLD_POOL.iterdir() if (p / "config.json").is_file()) \
            if WORLD_POOL.is_dir() else []
        raise InputError(f"no mini-world model {model!r}; shipped: {', '.join(known) or 'none'} "
                         "(regenerate with `silkie world train-pool`)")
    return str(path)


@dataclass
class Loaded:
    model: object  # a transformers (or PEFT-wrapped) image-text-to-text model, in eval mode
    processor: object
    device: str


def load(model: str, adapter: str | None = None, revision: str | None = None, adapter_revision: str | None = None,
         dtype: str | None = None, device_map: str | None = None, trust_remote_code: bool = False) -> Loaded:
    """Load a model and its processor for generation: bf16 (or fp16) on a GPU, fp32 on a CPU.

    `adapter` is a LoRA folder or Hub id applied on top without merging, so a trained model is
    evaluated and served from one copy of the base weights.
    """
    import torch

    path = resolve(model)
    folder = Path(path)
    if adapter is None and (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        # an adapter folder given as the model: load its base and apply it
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        adapter, path = path, resolve(base)
    cuda = torch.cuda.is_available()
    if dtype is None:
        dtype = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if cuda else "float32"
    network, processor = _from_pretrained(model, path, getattr(torch, dtype), device_map or ("auto" if cuda else None),
                                          revision, trust_remote_code)
    if adapter:
        from peft import PeftModel

        network = PeftModel.from_pretrained(network, resolve(adapter), revision=adapter_revision)
    # Batched generation appends on the right, so every row must end where its prompt ends.
    processor.tokenizer.padding_side = "left"
    network.eval()
    device = str(next(network.parameters()).device)
    return Loaded(network, processor, device)


def load_for_training(model: str, revision: str | None = None, bf16: bool = True, trust_remote_code: bool = False):
    """A model and processor to train: bf16 weights on a GPU when asked (fp32 otherwise), no device
    map (the trainer or launcher places it), training mode. Returns (model, processor)."""
    import torch

    dtype = torch.bfloat16 if bf16 and torch.cuda.is_available() else torch.float32
    network, processor = _from_pretrained(model, resolve(model), dtype, None, revision, trust_remote_code)
    network.train()
    return network, processor


def _from_pretrained(model: str, path: str, dtype, device_map, revision, trust_remote_code):
    import os

    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import logging

    if os.environ.get("SILKIE_VERBOSE") != "1":  # silkie.quiet: no "Loading weights" bar per model; this
        logging.disable_progress_bar()  # turns the Hub's off too, and a long download must still show its bar
        if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") is None:
            from huggingface_hub.utils import enable_progress_bars

            enable_progress_bars()
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        processor = AutoProcessor.from_pretrained(path, **kwargs)
        network = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, device_map=device_map, **kwargs)
    except OSError as error:  # missing folder, unknown Hub id, no network
        raise InputError(f"cannot load model {model!r}: {str(error).splitlines()[0]}") from None
    return network, processor
