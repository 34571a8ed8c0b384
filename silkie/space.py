"""The Space's engine: Silkie and its base model answering side by side from one copy of the weights.

`spaces/app.py` draws the page; this module does what the page asks, so it is tested without a
browser: settings from the environment, checks on everything a visitor sends, both answers streamed
from one batched `generate` (PEFT's mixed-batch adapter selection: row 0 skips the LoRA, row 1 uses
it), and the judge. A merged Silkie model (`silkie export --merge`) works too, at the cost of a
second copy of the weights: then each model streams its answer from its own `generate`. The
VLFeedback browser is in `silkie.space_browser`; `launch` and `export` back `silkie space`.
"""

from __future__ import annotations

import hashlib
import os
import queue
import random
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from silkie import InputError, one_line
from silkie.config import RESOURCES
from silkie.schema import ASPECTS

RUN = "runs/mini"  # what `silkie run` leaves by default
WORLD_BASE = "world:mini-base"
APP = RESOURCES / "spaces" / "app.py"  # spaces/ in a checkout, package data in a wheel
MAX_UPLOAD_BYTES = 10 * 2**20
MAX_PIXELS = 4096 * 4096  # decoding is paid in full before the processor shrinks the image
MAX_PROMPT_CHARS = 2000
MAX_NEW_TOKENS = 512
QUEUE_SIZE = 32  # visitors waiting beyond this are told to come back rather than queued for minutes
EXAMPLE_SEED = 4000  # world items the pool never trained (1000) or was measured (2000, 3000) on
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
MERGED_NOTE = ("Silkie is served here as a merged model: a second full copy of the weights in memory. "
               "Serve its LoRA adapter instead (`silkie export` without `--merge`) to hold one copy.")


@dataclass
class Settings:
    """What the Space serves: each a local path or a Hub id; None serves nothing and the page says so."""
    base: str | None = None  # None: the adapter's base, else world:mini-base
    adapter: str | None = f"{RUN}/train/adapter"  # a LoRA adapter, or a merged Silkie model
    dataset: str | None = f"{RUN}/vlfeedback"
    timeout: float = 60.0  # seconds one answer may take, and the longest wait for the model


def settings(run=None, base=None, adapter=None, dataset=None, defaults=None, root=None) -> Settings:
    """Defaults, then SILKIE_BASE_MODEL / SILKIE_ADAPTER / SILKIE_DATASET, then the arguments (`run`
    stands for RUN/train/adapter and RUN/vlfeedback). An empty string means "none". A default that
    names a folder beside `root` (an exported Space's own copy) resolves there."""
    chosen = {"base": None, "adapter": Settings.adapter, "dataset": Settings.dataset}
    for key, value in (defaults or {}).items():
        if value and root is not None and (Path(root) / value).exists():
            value = str(Path(root) / value)
        chosen[key] = value
    for key, name in (("base", "SILKIE_BASE_MODEL"), ("adapter", "SILKIE_ADAPTER"), ("dataset", "SILKIE_DATASET")):
        if name in os.environ:
            chosen[key] = os.environ[name]
    if run is not None:
        chosen.update(adapter=str(Path(run) / "train" / "adapter"), dataset=str(Path(run) / "vlfeedback"))
    for key, value in (("base", base), ("adapter", adapter), ("dataset", dataset)):
        if value is not None:
            chosen[key] = value
    return Settings(**{key: value or None for key, value in chosen.items()})


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
    import yaml
    from peft import PeftConfig

    train_config = Path(silkie).parent / "train_config.yaml"
    if train_config.is_file():
        model = (yaml.safe_load(train_config.read_text()) or {}).get("model")
        if model:
            return model
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


# ---- what a visitor sends ----------------------------------------------------------------------

def read_image(file):
    """An uploaded file (a path Gradio has confined to its upload folder) as an RGB image, or an
    InputError saying why not. Decoded from bytes, so no server path reaches the message."""
    from silkie.io import ImageError, load_image

    if not file:
        raise InputError("Upload an image first.")
    size = os.path.getsize(file)
    if size > MAX_UPLOAD_BYTES:
        raise InputError(f"That file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB.")
    try:
        return load_image(Path(file).read_bytes(), max_pixels=MAX_PIXELS)
    except ImageError as error:
        raise InputError(f"That image cannot be used: {error}") from None


def check_prompt(prompt) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise InputError("Type a question about the image.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"The question is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}.")
    return prompt


def check_params(max_new_tokens, temperature, top_p):
    from silkie.pool.base import GenerationParams

    try:
        tokens, temperature, top_p = int(max_new_tokens), float(temperature), float(top_p)
    except (TypeError, ValueError):
        raise InputError("The generation settings must be numbers.") from None
    if not (1 <= tokens <= MAX_NEW_TOKENS and 0 <= temperature <= 2 and 0 < top_p <= 1):  # NaN fails too
        raise InputError(f"Settings out of range: max new tokens 1-{MAX_NEW_TOKENS}, temperature 0-2, top-p 0-1.")
    return GenerationParams(max_new_tokens=tokens, temperature=temperature, top_p=top_p)


def pixel_key(image) -> str:
    """Names an image by its pixels, so a re-encoded copy of an example is still recognised."""
    return hashlib.sha256(f"{image.size}".encode() + image.tobytes()).hexdigest()[:16]


# ---- generation --------------------------------------------------------------------------------

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
        self.examples = world_examples()
        self.scenes = {pixel_key(example["image"]): example["scene"] for example in self.examples}

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

    def answer(self, image_file, prompt, max_new_tokens=96, temperature=0.0, top_p=1.0):
        """Yield (base answer, Silkie answer, note) as tokens arrive; InputError for bad input."""
        image, prompt = read_image(image_file), check_prompt(prompt)
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

    # ---- the judge -----------------------------------------------------------------------------

    def judge(self, image_file, prompt, base_answer: str, silkie_answer: str) -> str:
        """Markdown: each answer's rating and rationale on the three aspects, and who rated them.

        The scene judge rates mini-world scenes (the examples) against their ground truth; any other
        image needs the OpenAI-compatible judge, configured by SILKIE_JUDGE_MODEL."""
        image, prompt = read_image(image_file), check_prompt(prompt)
        names, answers = ["Base"], [(base_answer or "").strip()]
        if self.silkie:
            names, answers = names + ["Silkie"], answers + [(silkie_answer or "").strip()]
        if not all(answers):
            raise InputError("Ask first: the judge rates the answers shown.")
        scene = self.scenes.get(pixel_key(image))
        instruction = world_instruction(scene, prompt) if scene else None
        if instruction:
            from silkie.world.judge import SceneJudge

            return ratings_table(names, SceneJudge().rate(instruction, answers),
                                 "the scene judge, against the scene's ground truth")
        if os.environ.get("SILKIE_JUDGE_MODEL"):
            return ratings_table(names, openai_ratings(image, prompt, answers, self.config.timeout),
                                 f"{os.environ['SILKIE_JUDGE_MODEL']} (OpenAI-compatible judge)")
        why = ("the scene judge knows this scene, but not this question: ask it as the examples do "
               "(describe, count, colour, position, yes/no)") if scene else \
            "the scene judge only knows the mini world's scenes (the examples), not this image"
        raise InputError(f"Cannot judge: {why}. To judge anything, set SILKIE_JUDGE_MODEL "
                         "(with OPENAI_API_KEY, or SILKIE_JUDGE_BASE_URL for a server of your own).")


def world_examples(n: int = 6) -> list[dict]:
    """One mini-world item of each task kind: {"image", "prompt", "kind", "scene"}."""
    from silkie.io import load_image
    from silkie.world.make import generate, scene_image

    examples, kinds = [], set()
    for record, scene in generate(60, seed=EXAMPLE_SEED):
        kind = record["meta"]["task"]
        if kind not in kinds and len(examples) < n:
            kinds.add(kind)
            examples.append({"image": load_image(scene_image(scene)), "prompt": record["prompt"], "kind": kind,
                             "scene": scene})
    return examples


def world_instruction(scene, prompt: str) -> dict | None:
    """The record the mini world would write for this question about this scene, or None. Found by
    drawing the scene's tasks under many seeds: the world has few phrasings, so most are met."""
    from silkie.world.tasks import TASK_MIX, make_tasks

    wanted = " ".join(prompt.lower().split())
    for kind in TASK_MIX:
        for seed in range(64):
            for task in make_tasks(scene, kind, random.Random(seed)):
                if " ".join(task.prompt.lower().split()) == wanted:  # the meta as world.make writes it
                    meta = {"task": task.kind, "answer": task.answer, **task.meta, "scene": scene.to_dict()}
                    return {"prompt": task.prompt, "meta": meta}
    return None


def openai_ratings(image, prompt: str, answers: list[str], timeout: float) -> list[dict]:
    """Ratings from silkie.feedback's OpenAI judge: SILKIE_JUDGE_MODEL at SILKIE_JUDGE_BASE_URL (default:
    the OpenAI API), key from OPENAI_API_KEY (none sent when it is unset, for a keyless server)."""
    import dataclasses
    import tempfile

    from silkie.feedback.base import Item
    from silkie.feedback.openai_judge import OpenAIJudge, load_judge_config

    config = load_judge_config("gpt-4o", {"model": os.environ["SILKIE_JUDGE_MODEL"], "timeout": timeout,
                                          "base_url": os.environ.get("SILKIE_JUDGE_BASE_URL"), "max_retries": 1})
    if not os.environ.get("OPENAI_API_KEY"):
        config = dataclasses.replace(config, api_key_env=None)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image.png"
        image.save(path)
        item = Item("space", {"prompt": prompt, "image": pixel_key(image)}, path, answers)
        verdict = next(OpenAIJudge(config).judge([item]))
    if not verdict.ratings:
        raise InputError(f"The judge gave no ratings: {verdict.error or 'the provider failed; try again'}")
    return verdict.ratings


def cell(text) -> str:
    """Text that stays inside one markdown table cell."""
    return " ".join(str(text).split()).replace("|", "/")


def ratings_table(names: list[str], ratings: list[dict], judge: str) -> str:
    lines = [f"Rated by {judge}.", "", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {aspect} | " + " | ".join(f"**{cell(r[aspect]['Rating'])}** · {cell(r[aspect]['Rationale'])}"
                                            for r in ratings) + " |" for aspect in ASPECTS]
    return "\n".join(lines)


# ---- `silkie space` ----------------------------------------------------------------------------

def load_app():
    """spaces/app.py as a module (it is the Space's entry point, so it lives there, not in silkie/)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("silkie_space_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve(demo, host: str | None = None, port: int | None = None, share: bool = False, block: bool = True):
    """Queue and launch a built app with the Space's limits; returns what Blocks.launch returns."""
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD_BYTES,
                       prevent_thread_lock=not block, show_error=False, quiet=not block)


def launch(config: Settings, host: str = "127.0.0.1", port: int | None = None, share: bool = False) -> None:
    serve(load_app().build(config), host=host, port=port, share=share)


def export(out, source: str | None, config: Settings) -> Path:
    """Write a ready-to-push Space: app.py with the served models and dataset as its defaults (local
    folders copied in beside it: the adapter, or a merged model, as silkie/), README.md with the
    front matter filled in, and requirements.txt installing the toolkit from `source`, a git URL or
    a wheel URL."""
    import shutil

    import gradio
    import yaml

    if not source:
        raise InputError("--export needs --source: a git URL (git+https://.../silkie.git@TAG) or a wheel URL")
    if Path(source).exists():
        # A Space installs requirements.txt before its files are copied in: a wheel must be fetched.
        raise InputError(f"--source {source} is a local file; upload it and give its URL")
    if not config.adapter or not reachable(config.adapter):
        raise InputError(f"no Silkie adapter at {config.adapter}: run `silkie run` first, or give --adapter")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    adapter = is_adapter(config.adapter)
    base = world_name(config.base or base_of(config.adapter, merged=not adapter))
    if Path(base).is_dir():
        raise InputError(f"the base model {base} is a local folder; a Space needs its Hub id or world:NAME (--base)")
    served = {"base": base, "adapter": config.adapter, "dataset": config.dataset}
    for key, folder in (("adapter", "adapter" if adapter else "silkie"), ("dataset", "vlfeedback")):
        if served[key] and Path(served[key]).is_dir():  # a local folder travels with the Space
            shutil.copytree(served[key], out / folder, dirs_exist_ok=True)
            served[key] = folder
        elif served[key] and not reachable(served[key]):
            raise InputError(f"no {key} at {served[key]}")

    app = APP.read_text()
    if app.count("\nDEFAULTS = {}\n") != 1:
        raise RuntimeError(f"{APP} lacks its `DEFAULTS = {{}}` line")
    (out / "app.py").write_text(app.replace("\nDEFAULTS = {}\n", f"\nDEFAULTS = {served!r}\n"))

    _, front, body = (APP.parent / "README.md").read_text().split("---\n", 2)
    meta = yaml.safe_load(front)
    meta.update(sdk_version=gradio.__version__, models=[ref for ref in (base, config.adapter) if on_hub(ref)])
    if config.dataset and on_hub(config.dataset):
        meta["datasets"] = [config.dataset]
    else:
        meta.pop("datasets", None)
    (out / "README.md").write_text(f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n{body}")

    requirement = f"silkie @ {source}" if re.match(r"git\+|https?://", source) else source
    lines = (APP.parent / "requirements.txt").read_text().splitlines()
    (out / "requirements.txt").write_text("\n".join(requirement if line.startswith("silkie") else line
                                                    for line in lines) + "\n")
    return out
