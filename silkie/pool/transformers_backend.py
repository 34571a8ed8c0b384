"""Generation with any transformers image-text-to-text model: true batching with left padding,
batches sorted by length, and the batch halved when the accelerator runs out of memory."""

from __future__ import annotations

from silkie import error_line
from silkie.pool.base import GenerationParams, Request, Result


def _out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def generate_batch(loaded, requests: list[Request], params: GenerationParams) -> list[Result]:
    """Generate for one batch as given (no sorting or splitting); raises on out-of-memory only."""
    import torch

    processor, model = loaded.processor, loaded.model
    texts = [processor.apply_chat_template(r.messages, add_generation_prompt=True) for r in requests]
    images = [[r.image] if r.image is not None else [] for r in requests]
    inputs = processor(text=texts, images=images if any(images) else None, padding=True,
                       return_tensors="pt").to(loaded.device)
    sampling = {} if params.greedy else {"temperature": params.temperature, "top_p": params.top_p}
    if not params.greedy:
        torch.manual_seed(params.seed)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=params.max_new_tokens,
                                do_sample=not params.greedy, **sampling,
                                pad_token_id=processor.tokenizer.pad_token_id)
    new = output[:, inputs["input_ids"].shape[1]:]
    results = []
    for request, tokens, prompt_mask in zip(requests, new, inputs["attention_mask"]):
        text = processor.decode(tokens, skip_special_tokens=True).strip()
        usage = {"prompt_tokens": int(prompt_mask.sum()),
                 "completion_tokens": int((tokens != processor.tokenizer.pad_token_id).sum())}
        results.append(Result(request.key, text, None, usage) if text else
                       Result(request.key, None, "empty response", usage))
    return results


class TransformersBackend:
    """A pool model served in-process. `batch_size` is a ceiling: halved on out-of-memory."""

    def __init__(self, name: str, model: str, adapter: str | None = None, revision: str | None = None,
                 batch_size: int = 16, dtype: str | None = None, device_map: str | None = None,
                 trust_remote_code: bool = False):
        from silkie.loader import load

        self.name = name
        self.batch_size = batch_size
        self.loaded = load(model, adapter=adapter, revision=revision, dtype=dtype, device_map=device_map,
                           trust_remote_code=trust_remote_code)

    def generate(self, requests: list[Request], params: GenerationParams) -> list[Result]:
        tokenizer = self.loaded.processor.tokenizer
        # A batch runs until its longest answer ends, so batch alike prompts together: similar
        # length wastes less padding, and the same wording tends to get answers of similar length.
        texts = [_text_of(r) for r in requests]
        lengths = [len(ids) for ids in tokenizer(texts).input_ids] if texts else []
        order = sorted(range(len(requests)), key=lambda i: (lengths[i], texts[i], i))
        results: dict[int, Result] = {}
        start = 0
        while start < len(order):
            chunk = order[start:start + self.batch_size]
            try:
                batch_results = generate_batch(self.loaded, [requests[i] for i in chunk], params)
            except Exception as error:  # noqa: BLE001 - one bad batch must not end the run
                if _out_of_memory(error) and self.batch_size > 1:
                    self.batch_size //= 2
                    _free_memory()
                    continue
                if len(chunk) > 1:  # find the culprit: retry this batch one item at a time
                    batch_results = [self._alone(requests[i], params) for i in chunk]
                else:
                    batch_results = [Result(requests[chunk[0]].key, None, error_line(error))]
            results.update(zip(chunk, batch_results))
            start += len(chunk)
        return [results[i] for i in range(len(requests))]

    def _alone(self, request: Request, params: GenerationParams) -> Result:
        try:
            return generate_batch(self.loaded, [request], params)[0]
        except Exception as error:  # noqa: BLE001
            return Result(request.key, None, error_line(error))


def _text_of(request: Request) -> str:
    return " ".join(part.get("text") or "" for message in request.messages for part in message["content"]
                    if isinstance(message["content"], list)) or str(request.messages)


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
