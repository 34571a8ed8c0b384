"""`silkie space`: serve the app here, or export it as a folder ready to push as a Hugging Face Space.

The app itself is `spaces/app.py` (a Space's entry point must be a file of its own); an exported
Space is that file unchanged, with what it serves written beside it in a JSON settings file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
from pathlib import Path

from silkie import InputError
from silkie.config import RESOURCES
from silkie.space.config import SETTINGS_FILE, Settings, base_of, is_adapter, on_hub, reachable, world_name
from silkie.space.inputs import MAX_UPLOAD_BYTES, UPLOAD_SWEEP_S, UPLOADS_MAX_AGE_S, UPLOADS_MAX_BYTES

__all__ = ["APP", "QUEUE_SIZE", "load_app", "serve", "launch", "trim_uploads", "export"]

APP = RESOURCES / "spaces" / "app.py"  # spaces/ in a checkout, package data in a wheel
QUEUE_SIZE = 32  # visitors waiting beyond this are told to come back rather than queued for minutes


def load_app():
    """spaces/app.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("silkie_space_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve(demo, host: str | None = None, port: int | None = None, share: bool = False, block: bool = True):
    """Queue and launch a built app with the Space's limits; returns what Blocks.launch returns.

    Uploads (see UPLOADS_MAX_AGE_S): Gradio's own sweep (`delete_cache`) deletes the files it wrote
    for the app, uploads and outputs, once older than the age, and all of them at shutdown (the
    examples stay); ours deletes the oldest uploads beyond UPLOADS_MAX_BYTES, each with its folder,
    and at shutdown every upload's folder."""
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    demo.delete_cache = (UPLOAD_SWEEP_S, UPLOADS_MAX_AGE_S)  # read when launch() builds the server app
    return demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD_BYTES,
                       prevent_thread_lock=not block, show_error=False, quiet=not block,
                       app_kwargs={"lifespan": _uploads_bounded},
                       num_workers=0)  # uploads taken by worker processes (GRADIO_NUM_WORKERS) would escape both


@contextlib.asynccontextmanager
async def _uploads_bounded(app):
    """Runs beside the server: the byte bound every UPLOAD_SWEEP_S, and every upload deleted at shutdown
    (before Gradio's own last sweep, which would leave their folders)."""
    uploads = app.get_blocks().upload_file_set  # Gradio adds each upload here, queued or not

    async def sweep():
        while True:
            await asyncio.sleep(UPLOAD_SWEEP_S)
            await asyncio.to_thread(trim_uploads, uploads, UPLOADS_MAX_BYTES)

    task = asyncio.create_task(sweep())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        trim_uploads(uploads, -1)


def trim_uploads(uploads: set[str], max_bytes: int) -> None:
    """Delete the oldest of `uploads` (paths; the set is Gradio's own, updated in place) until the
    rest hold at most `max_bytes` (-1: all of them), and each folder (one per upload) left empty."""
    found = []
    for name in list(uploads):  # copied: uploads arrive while this runs
        try:
            stat = os.lstat(name)
        except FileNotFoundError:  # still being moved in by Gradio
            continue
        found.append((stat.st_ctime, stat.st_size, name))  # ctime, the age Gradio's sweep goes by
    total = sum(size for _, size, _ in found)
    for _, size, name in sorted(found):
        if total <= max_bytes:
            break
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)
        with contextlib.suppress(OSError):  # not empty: another upload of the same bytes
            os.rmdir(Path(name).parent)
        uploads.discard(name)
        total -= size


def launch(config: Settings, host: str = "127.0.0.1", port: int | None = None, share: bool = False) -> None:
    serve(load_app().build(config), host=host, port=port, share=share)


def export(out, source: str | None, config: Settings) -> Path:
    """Write a ready-to-push Space: app.py, and beside it silkie_space.json naming the served models
    and dataset (local folders copied in: the adapter, or a merged model, as silkie/), README.md
    with the front matter filled in, and requirements.txt installing the toolkit from `source`, a
    git URL or a wheel URL."""
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
            served[key] = folder  # relative: the app resolves it beside itself
        elif served[key] and not reachable(served[key]):
            raise InputError(f"no {key} at {served[key]}")

    shutil.copyfile(APP, out / "app.py")
    (out / SETTINGS_FILE).write_text(json.dumps(served, indent=2) + "\n")

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
