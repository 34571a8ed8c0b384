"""The Space's engine: Silkie and its base model answering side by side from one copy of the weights.

`spaces/app.py` draws the page; the engine does what the page asks, so it is tested without a
browser. Both answers stream from one batched `generate` (PEFT's mixed-batch adapter selection:
row 0 skips the LoRA, row 1 uses it). A merged Silkie model (`silkie export --merge`) works too, at
the cost of a second copy of the weights: then each model streams its answer from its own
`generate`. Judging the answers is the Referee's (silkie.space.judging).
"""

from __future__ import annotations

import queue
import threading
import time

from silkie import InputError, one_line
from silkie.space.config import WORLD_BASE, Settings, base_of, is_adapter, reachable
from silkie.space.inputs import check_params, check_prompt, read_image
from silkie.space.judging import Referee

__all__ = ["Engine", "MERGED_NOTE"]

MERGED_NOTE = ("Silkie is served here as a merged model: a second full copy of the weights in memory. "
               "Serve its LoRA adapter instead (`silkie export` without `--merge`) to hold one copy.")

_DONE = object()


class _Streamer:
    """transformers' TextIteratorStreamer, for a batch (which it refuses): after each step, the text
    of every row so far, put on `sink` as (first, texts) where `first` is the first row's pane.
    generate() calls put() with the prompt first, then once per new token, then end()."""

    def __init__(self, tokenizer, rows: int, sink: queue.Queue, first: int = 0):
        self.tokenizer, self.tokens, self.sink, self.first = tokenizer, [[] for _ in range(rows)], sink, first
        self.prompt = True

    def put(self, value) -> None:
        if self.prompt:
            self.prompt = False
            return
        for row, new in zip(self.tokens, value.reshape(len(self.tokens), -1).tolist()):
            row += new
        self.sink.put((self.first, [self.tokenizer.decode(row, skip_special_tokens=True).strip()
                                    for row in self.tokens]))

    def end(self) -> None:
        self.sink.put((self.first, _DONE))


def _panes(sink: queue.Queue, streams: int, texts: list[str]):
    """`texts` after each update from the streamers, until all `streams` have ended; an exception
    put on the sink is raised."""
    while streams:
        first, item = sink.get()
        if isinstance(item, BaseException):
            raise item
        if item is _DONE:
            streams -= 1
        else:
            texts[first:first + len(item)] = item
            yield list(texts)


class _Cancelled:
    """A stopping criterion: ends generation once the visitor has gone, freeing the model for the next."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Engine:
    """The base model in memory and Silkie beside it: a LoRA adapter on top of the same weights (one
    copy; both answers from one batch) or a merged model (a second copy; its own generate call).
    Generation is serialised by a lock, since PEFT's adapter selection hooks every LoRA layer for
    the length of a generate call."""

    def __init__(self, config: Settings):
        self.config = config
        self.lock = threading.Lock()
        self.loaded = self.problem = self.silkie = self.merged = None  # merged: the merged model's Loaded
        self.base = config.base or WORLD_BASE
        self.silkie_note = "No Silkie adapter configured: set SILKIE_ADAPTER to one (a folder or a Hub id)."
        silkie = config.adapter
        if silkie and not reachable(silkie):
            self.silkie_note = (f"No Silkie adapter at {silkie} yet: run `silkie run` first, "
                                "or point SILKIE_ADAPTER at one (a folder or a Hub id).")
            silkie = None
        self._load(silkie)
        self.referee = Referee(config)
        self.examples = self.referee.examples  # the page offers the scenes the scene judge knows first

    def _load(self, silkie: str | None) -> None:
        """The base with the adapter `silkie` on top, or the base and the merged model `silkie`."""
        from silkie.chat import load

        merged = bool(silkie) and not is_adapter(silkie)
        try:
            if silkie and not self.config.base:
                self.base = base_of(silkie, merged)
            self.loaded = load(self.base, adapter=None if merged else silkie)
            if merged:
                self.merged = load(silkie)
            if silkie:
                self.silkie, self.silkie_note = silkie, None
        except Exception as error:  # noqa: BLE001 - the page must come up all the same and say what is wrong
            if silkie:
                self.loaded = self.merged = None
                self._load(None)
                self.silkie_note = (f"The Silkie {'model' if merged else 'adapter'} {silkie} cannot be loaded: "
                                    f"{one_line(error)[:300]}")
            else:
                self.problem = f"The base model {self.base} cannot be loaded: {one_line(error)[:300]}"

    def answer(self, image, prompt, max_new_tokens=96, temperature=0.0, top_p=1.0):
        """Yield (base answer, Silkie answer, note) as tokens arrive; InputError for bad input.
        `image` is an upload's path or a PIL image."""
        image, prompt = read_image(image), check_prompt(prompt)
        params = check_params(max_new_tokens, temperature, top_p)
        if self.problem:
            raise InputError(self.problem)
        start, texts = time.monotonic(), ["", ""]
        for texts in self.stream(image, prompt, params):
            yield texts[0], texts[1] if self.silkie else self.silkie_note, ""
        if time.monotonic() - start >= self.config.timeout:
            yield (texts[0], texts[1] if self.silkie else self.silkie_note,
                   f"Stopped at the {self.config.timeout:g} s limit per request; the answers are cut short.")

    def stream(self, image, prompt: str, params):
        """The texts of [base, Silkie] (or [base]) after each generated token."""
        import torch

        sink, gone = queue.Queue(), threading.Event()
        if self.merged:  # a model per pane
            jobs = [self._job(loaded, image, prompt, params, 1, sink, pane, gone)
                    for pane, loaded in enumerate((self.loaded, self.merged))]
        else:  # one batch: row 1 through the adapter, if any
            jobs = [self._job(self.loaded, image, prompt, params, 2 if self.silkie else 1, sink, 0, gone)]
            if self.silkie:
                jobs[0][1]["adapter_names"] = ["__base__", self.loaded.model.active_adapter]
        # Greedy answers stream side by side, a thread per model; sampled ones one after the other,
        # since two threads drawing from torch's one global generator would make no draw repeatable.
        threads = [[job] for job in jobs] if params.greedy else [jobs]
        if not self.lock.acquire(timeout=self.config.timeout):
            raise InputError("The model is busy with other visitors; try again in a minute.")
        deadline, finished = time.monotonic() + self.config.timeout, threading.Barrier(len(threads),
                                                                                     action=self.lock.release)

        def run(batch):
            try:
                for model, kwargs in batch:
                    if gone.is_set():
                        break
                    torch.manual_seed(params.seed)  # under the lock: sampling is repeatable
                    with torch.inference_mode():  # ends its streamer itself
                        model.generate(**kwargs, max_time=max(deadline - time.monotonic(), 0.0))
            except BaseException as error:  # noqa: BLE001 - handed to the visitor's thread
                sink.put((0, error))
            finally:
                finished.wait()  # the last one out releases the lock

        workers = [threading.Thread(target=run, args=(batch,), daemon=True) for batch in threads]
        for worker in workers:
            worker.start()
        try:
            yield from _panes(sink, len(jobs), ["", ""] if self.silkie else [""])
        finally:
            gone.set()
            for worker in workers:
                worker.join()  # nothing of this request outlives it

    def _job(self, loaded, image, prompt: str, params, rows: int, sink: queue.Queue, pane: int, gone):
        """(model, generate's arguments) for `rows` copies of the question, streamed to `pane` on."""
        from transformers import StoppingCriteriaList

        from silkie.schema import user_turn

        processor = loaded.processor
        text = processor.apply_chat_template(user_turn(prompt), add_generation_prompt=True)
        inputs = processor(text=[text] * rows, images=[[image]] * rows, return_tensors="pt").to(loaded.device)
        kwargs = dict(**inputs, max_new_tokens=params.max_new_tokens, do_sample=not params.greedy,
                      streamer=_Streamer(processor.tokenizer, rows, sink, pane),
                      pad_token_id=processor.tokenizer.pad_token_id,
                      stopping_criteria=StoppingCriteriaList([_Cancelled(gone)]))
        if not params.greedy:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        return loaded.model, kwargs

    def judge(self, image, prompt, base_answer: str, silkie_answer: str, visitor: str = "local") -> str:
        """Markdown rating the answers shown in the panes (Silkie's only when it is served); `image`
        is an upload's path or a PIL image. See Referee.judge."""
        answers = {"Base": base_answer, "Silkie": silkie_answer} if self.silkie else {"Base": base_answer}
        return self.referee.judge(image, prompt, answers, visitor)
