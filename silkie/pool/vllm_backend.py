"""Offline vLLM generation for throughput on GPUs (the `[vllm]` extra).

The prompt text comes from the model's own Hugging Face processor (its chat template), so this
file holds no model-specific prompt formats; vLLM receives the image beside the prompt.
"""

from __future__ import annotations

from silkie import InputError
from silkie.pool.base import GenerationParams, Request, Result


class VLLMBackend:
    def __init__(self, name: str, model: str, revision: str | None = None, adapter: str | None = None,
                 max_model_len: int = 4096, gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1,
                 trust_remote_code: bool = False):
        try:
            from vllm import LLM
        except ImportError:
            raise InputError("the vllm backend needs vLLM: pip install 'silkie[vllm]'") from None
        from transformers import AutoProcessor

        from silkie.loader import resolve

        self.name = name
        path = resolve(model)
        self.processor = AutoProcessor.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
        self.llm = LLM(model=path, revision=revision, max_model_len=max_model_len,
                       gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                       limit_mm_per_prompt={"image": 1}, enable_lora=adapter is not None,
                       trust_remote_code=trust_remote_code)
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, resolve(adapter))

    def generate(self, requests: list[Request], params: GenerationParams) -> list[Result]:
        from vllm import SamplingParams

        sampling = SamplingParams(max_tokens=params.max_new_tokens, temperature=max(params.temperature, 0.0),
                                  top_p=params.top_p, seed=params.seed)
        prompts = [{"prompt": self.processor.apply_chat_template(r.messages, add_generation_prompt=True),
                    **({"multi_modal_data": {"image": r.image}} if r.image is not None else {})}
                   for r in requests]
        outputs = self.llm.generate(prompts, sampling, lora_request=self.lora, use_tqdm=False)
        results = []
        for request, output in zip(requests, outputs):
            text = output.outputs[0].text.strip() if output.outputs else ""
            usage = {"prompt_tokens": len(output.prompt_token_ids or []),
                     "completion_tokens": len(output.outputs[0].token_ids) if output.outputs else 0}
            results.append(Result(request.key, text or None, None if text else "empty response", usage))
        return results
