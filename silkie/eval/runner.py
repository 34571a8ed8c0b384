"""What every benchmark run shares: answers from a pool backend, saved per item and resumable, and a
text-only judge behind any OpenAI-compatible API with its replies cached.

Answers go to `DIR/<benchmark>/predictions.jsonl` (a JsonlWriter keyed by id, one line per question:
model, adapter, prompt, response, error), so a rerun generates only what is missing, and the backend
is built at the first missing answer — a finished folder loads no model. A folder holds one model's
answers: another model (or adapter) is refused rather than mixed in. A question whose image cannot
be read gets its error there without reaching the model.

The judge is the pool's OpenAI backend (the SDK's retries, which honour Retry-After; a concurrency
limit; the key read from the environment at call time, never stored: the client plumbing of
`silkie.openai_api`) with the run's request cache (`DIR/cache.sqlite`) in front, so a rerun pays only
for replies that failed before. A failed request becomes that item's error, never the run's — except
a refused key, model or URL (401/403/404), which would fail every item alike and stops the run.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from silkie import InputError, one_line
from silkie.io import JsonlWriter, RecordError, load_image, read_jsonl
from silkie.openai_api import stop_error
from silkie.pool.base import GenerationParams, Request
from silkie.pool.config import ModelSpec, make_backend
from silkie.schema import user_turn

PREDICTIONS = "predictions.jsonl"
CACHE = "cache.sqlite"
BATCH = 32  # questions per backend call, and so per resumable chunk
JUDGE_CHUNK = 64  # judge requests between cache writes: what a kill can cost at most


def data_folder(data: str | Path) -> Path:
    """`--data`: a local file or folder, or a Hub dataset id (ORG/NAME) downloaded as it is stored."""
    path = Path(data)
    if path.exists():
        return path
    text = str(data)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise InputError(f"--data {text}: no such file or folder (nor a Hub dataset id ORG/NAME)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, repo_type="dataset"))
    except Exception as error:  # offline, gated, missing: all the user's to fix
        raise InputError(f"--data {text}: cannot download the Hub dataset: {one_line(error)[:200]}") from None


def release_json(data: str | Path, file: str):
    """(path, parsed JSON) of a release's file: `data` is the file, or a folder or Hub id holding `file`."""
    import json

    path = data_folder(data)
    path = path / file if path.is_dir() else path
    try:
        return path, json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON ({error.msg})") from None


def model_spec(model: str, adapter: str | None = None, backend: str = "transformers", base_url: str | None = None,
               batch_size: int = 16, max_new_tokens: int = 128) -> ModelSpec:
    """The evaluated model as a pool model: greedy decoding, the adapter applied unmerged."""
    return ModelSpec(name=model, model=model, backend=backend, adapter=adapter, base_url=base_url,
                     batch_size=batch_size, generation=GenerationParams(max_new_tokens=max_new_tokens))


def lazy(spec: ModelSpec):
    """A callable returning the spec's backend, built on the first call only."""
    built = []

    def backend():
        if not built:
            built.append(make_backend(spec))
        return built[0]
    return backend


def check_owner(path: Path, model: str, adapter: str | None) -> None:
    """Refuse to mix answers of another model (or adapter) into this folder."""
    if not path.is_file():
        return
    for _, record in read_jsonl(path):
        if isinstance(record, RecordError):
            continue
        if (record.get("model"), record.get("adapter")) != (model, adapter):
            raise InputError(f"{path} holds answers of model {record.get('model')!r} (adapter "
                             f"{record.get('adapter')!r}), not {model!r} (adapter {adapter!r}): use another --out")
        return


def predict(path: Path, records: list[dict], model: str, adapter: str | None, backend, params: GenerationParams,
            image=None, log=print) -> tuple[dict[str, dict], int]:
    """Answers to `records` ({"id", "prompt", "image_path": a file or the image's bytes}) from `path`,
    generating and appending the missing ones with `backend()`; `image(record)`, if given, makes a
    record's image instead of decoding its image_path. Returns (answers by id, how many were added)."""
    check_owner(path, model, adapter)
    added = 0
    with JsonlWriter(path) as writer:
        todo = [r for r in records if (r["id"],) not in writer]
        if todo:
            log(f"{path.parent.name}: generating {len(todo)} of {len(records)} answers")
        for start in range(0, len(todo), BATCH):
            chunk, requests, failed = todo[start:start + BATCH], [], {}
            for r in chunk:
                try:
                    source = None if image else r["image_path"]
                    # A file is named as well as decoded: a remote backend may send it as it is.
                    file = Path(source) if isinstance(source, (str, Path)) else None
                    decoded = image(r) if image else load_image(source)
                    requests.append(Request(r["id"], decoded, user_turn(r["prompt"]), file))
                except InputError as error:  # an unreadable image fails its question, not the run
                    failed[r["id"]] = one_line(error)
            results = {res.key: res for res in backend().generate(requests, params)} if requests else {}
            for r in chunk:
                result = results.get(r["id"])
                added += writer.write({"id": r["id"], "model": model, "adapter": adapter, "prompt": r["prompt"],
                                       "response": result.text if result else None,
                                       "error": result.error if result else failed[r["id"]]})
            writer.flush()
    wanted = {r["id"] for r in records}
    answers = {rec["id"]: rec for _, rec in read_jsonl(path) if isinstance(rec, dict) and rec.get("id") in wanted}
    return answers, added


def positional_fields(template: str) -> int | None:
    """How many fields `template` has for `str.format` when every one is a bare `{}`; None when it has
    any other field (named, numbered, with a conversion or spec) or unbalanced braces."""
    import string

    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError:
        return None
    return len(fields) if all(f == ("", "", None) for f in fields) else None


def official(placeholders) -> bool:
    """Whether a benchmark's PLACEHOLDERS describe an official positional template (see check_template)."""
    return hasattr(placeholders, "positional") and hasattr(placeholders, "variable")


def check_template(template: str, placeholders, source: str = "judge template") -> str:
    """The form of a judge template, "named" or "positional", or InputError naming `source`.
    `placeholders` is a benchmark's PLACEHOLDERS: a tuple of our wording's named placeholders (replaced
    literally), or, for a benchmark with an official template, an object with `named` (that tuple),
    `positional` (how many bare `{}` the official template fills in order, by str.format's rules, so
    `{{`/`}}` are literal braces) and `variable` (the official script's module-level name for it)."""
    named = tuple(getattr(placeholders, "named", placeholders))
    if official(placeholders) and (all(p not in template for p in named) or "{}" in template):
        count = positional_fields(template)
        if count != placeholders.positional:
            found = "fields other than bare {}, or unbalanced braces" if count is None else f"{count} {{}} placeholders"
            raise InputError(f"{source}: expected {placeholders.positional} positional {{}} placeholders (the "
                             f"official template's form), found {found}")
        return "positional"
    missing = [p for p in named if p not in template]
    if missing:
        raise InputError(f"{source} lacks {', '.join(missing)}")
    return "named"


def script_string(path: Path, variable: str) -> str:
    """The module-level string `variable` of a Python script, read with `ast` (the script is not run)."""
    import ast

    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as error:
        raise InputError(f"--judge-template {path}: not a Python script (line {error.lineno}: {error.msg})") from None
    value = None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == variable for t in targets):
            value = node.value  # the last assignment wins, as running the module would leave it
    if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
        raise InputError(f"--judge-template {path}: no module-level string literal `{variable} = ...` in the script")
    return value.value


@dataclass
class Grader:
    """A text-only judge behind any OpenAI-compatible API. `template` is the text of a
    `--judge-template` file (None: the benchmark's own wording)."""
    model: str = "gpt-4o"
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"  # the variable holding the key; None for a keyless server
    template: str | None = None
    max_tokens: int = 1024
    concurrency: int = 8
    form: str = "named"  # the template's placeholders: "named" (ours) or "positional" (the official form)

    @classmethod
    def from_file(cls, template_file: str | Path | None, placeholders, **settings) -> Grader:
        """The judge with the text of `template_file`: a text file, or (where the benchmark has an official
        template) the official evaluation script, whose module-level template string is read without
        running it. A template with the wrong placeholders is refused here, before any request."""
        template, form = None, "named"
        if template_file:
            path = Path(template_file)
            try:
                if path.suffix == ".py" and official(placeholders):
                    template = script_string(path, placeholders.variable)
                else:
                    template = path.read_text(encoding="utf-8")
            except OSError as error:
                raise InputError(f"--judge-template {template_file}: {error.strerror}") from None
            except UnicodeDecodeError:
                raise InputError(f"--judge-template {template_file}: not UTF-8 text") from None
            form = check_template(template, placeholders, f"--judge-template {template_file}")
        return cls(template=template, form=form, **settings)

    def info(self, own: str) -> dict:
        """What a report records about the judge; `own` names the benchmark's own wording."""
        version = own if self.template is None else \
            f"template-{hashlib.sha256(self.template.encode()).hexdigest()[:12]}"
        return {"model": self.model, "prompt": version}

    def ask(self, prompts: dict[str, str], cache_dir: Path, seed: int = 0,
            log=print) -> dict[str, tuple[str | None, str | None]]:
        """{key: (reply, None) or (None, error)} for {key: prompt}; `seed` tells grading runs apart,
        so each run is its own request (and cache entry)."""
        from silkie.cache import RequestCache, request_key

        params = GenerationParams(max_new_tokens=self.max_tokens, seed=seed)
        out, todo = {}, []
        with RequestCache(Path(cache_dir) / CACHE) as cache:
            keys = {key: request_key(kind="eval-judge", model=self.model, prompt=text, params=asdict(params))
                    for key, text in prompts.items()}
            for key, text in prompts.items():
                hit = cache.get(keys[key])
                if hit is not None:
                    out[key] = (hit["text"], None)
                else:
                    todo.append(Request(key, None, [{"role": "user", "content": text}]))
            if todo:
                from silkie.pool.openai_backend import OpenAIBackend

                log(f"judge {self.model}: {len(todo)} requests ({len(prompts) - len(todo)} cached)")
                backend = OpenAIBackend(f"judge:{self.model}", self.model, base_url=self.base_url,
                                        api_key_env=self.api_key_env, concurrency=self.concurrency)
            for start in range(0, len(todo), JUDGE_CHUNK):
                for result in backend.generate(todo[start:start + JUDGE_CHUNK], params):
                    # A wrong key, model or URL fails every request alike: stop rather than record it on every item.
                    if result.error and (stop := stop_error(result.error)):
                        raise stop
                    if result.error is None:
                        cache.put(keys[result.key], {"text": result.text, "usage": result.usage})
                    out[result.key] = (result.text, result.error)
        return out


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


def image_files(folder: Path) -> dict[str, Path]:
    """Image files under `folder` by file name and by stem (first found wins), for releases that name
    an image by its id or its source URL rather than by a path."""
    index = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            index.setdefault(path.name, path)
            index.setdefault(path.stem, path)
    return index


def finish(out: Path, name: str, spec: ModelSpec, data, added: int, **facts) -> dict:
    """The run's summary, also written to `out/<name>/run.json`."""
    import json

    summary = {"benchmark": name, "model": spec.model, "adapter": spec.adapter, "backend": spec.backend,
               "data": str(data), "generation": {"greedy": spec.generation.greedy,
                                                 "max_new_tokens": spec.generation.max_new_tokens},
               "generated": added, **facts}
    (Path(out) / name / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
