"""The pool config (configs/pool/*.yaml) and the sampler that gives each instruction K models."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from silkie import InputError
from silkie.pool.base import Backend, GenerationParams

BACKENDS = ("transformers", "openai", "vllm")


@dataclass
class ModelSpec:
    name: str  # the name written to every completion record
    model: str  # a folder, a Hub id, `world:NAME`, or the API's model name
    backend: str = "transformers"
    revision: str | None = None  # pin a Hub revision: the same id can change under you
    adapter: str | None = None  # a LoRA on top of `model` (transformers backend)
    base_url: str | None = None  # OpenAI-compatible server (openai backend)
    api_key_env: str | None = "OPENAI_API_KEY"  # the variable holding the key (null: none); never the key itself
    weight: float = 1.0  # relative share of instructions
    batch_size: int = 16
    generation: GenerationParams = field(default_factory=GenerationParams)
    options: dict = field(default_factory=dict)  # backend extras: dtype, device_map, concurrency, ...


@dataclass
class PoolConfig:
    name: str
    models: list[ModelSpec]
    per_instruction: int = 4  # the paper: 4 different models answer each instruction

    def __post_init__(self):
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise InputError(f"pool {self.name!r}: model names must be unique, got {names}")
        for spec in self.models:
            if spec.backend not in BACKENDS:
                raise InputError(f"pool {self.name!r}: model {spec.name!r} has unknown backend {spec.backend!r} "
                                 f"(known: {', '.join(BACKENDS)})")
            if spec.weight <= 0:
                raise InputError(f"pool {self.name!r}: model {spec.name!r} needs a positive weight")


def load_pool(name_or_path: str) -> PoolConfig:
    from silkie.config import load

    return load(PoolConfig, "pool", name_or_path)


def assign(instruction_id: str, pool: PoolConfig, k: int, seed: int) -> list[str]:
    """K distinct models for one instruction, drawn with probability proportional to weight.

    Seeded by (seed, id) alone, so the draw is the same whatever the order, the sharding or the
    other instructions; over many instructions each model's share follows its weight.
    """
    if not 1 <= k <= len(pool.models):
        raise InputError(f"--per-instruction {k} needs 1..{len(pool.models)} models in pool {pool.name!r}")
    digest = hashlib.sha256(f"{seed}/{instruction_id}".encode()).digest()
    rng = random.Random(digest)
    # Weighted sampling without replacement: the k largest u^(1/w) (Efraimidis-Spirakis).
    keys = sorted(((rng.random() ** (1 / m.weight), m.name) for m in pool.models), reverse=True)
    return [name for _, name in keys[:k]]


def make_backend(spec: ModelSpec) -> Backend:
    """Instantiate a pool model's backend (this is where weights get loaded or clients made)."""
    if spec.backend == "transformers":
        from silkie.pool.transformers_backend import TransformersBackend

        return TransformersBackend(spec.name, spec.model, adapter=spec.adapter, revision=spec.revision,
                                   batch_size=spec.batch_size, **spec.options)
    if spec.backend == "openai":
        from silkie.pool.openai_backend import OpenAIBackend

        return OpenAIBackend(spec.name, spec.model, base_url=spec.base_url, api_key_env=spec.api_key_env,
                             **spec.options)
    from silkie.pool.vllm_backend import VLLMBackend

    return VLLMBackend(spec.name, spec.model, revision=spec.revision, **spec.options)
