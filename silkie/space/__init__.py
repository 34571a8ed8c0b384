"""The Space: Silkie and its base model side by side, a judge of their answers, and a browser of
the VLFeedback data, drawn by `spaces/app.py`.

    config.py    what is served (base, adapter, dataset, run) and where each setting comes from
    inputs.py    checks on what a visitor sends
    engine.py    the models in memory; both panes streamed from one batch
    judging.py   the scene judge and the OpenAI judge of the answers (its calls counted); the ratings table
    browser.py   the VLFeedback tab's index and filters
    deploy.py    `silkie space`: serve here, or export a folder to push as a Hugging Face Space

The names below are what `silkie.cli` and the app use.
"""

from silkie.space.config import SETTINGS_FILE, Settings, settings, shown
from silkie.space.deploy import export, launch, load_app, serve
from silkie.space.engine import MERGED_NOTE, Engine
from silkie.space.inputs import (
    MAX_ANSWER_CHARS,
    MAX_NEW_TOKENS,
    MAX_PROMPT_CHARS,
    MAX_UPLOAD_BYTES,
    check_params,
    visitor,
)
from silkie.space.judging import world_examples

__all__ = ["SETTINGS_FILE", "Settings", "settings", "shown", "export", "launch", "load_app", "serve", "MERGED_NOTE",
           "Engine", "MAX_ANSWER_CHARS", "MAX_NEW_TOKENS", "MAX_PROMPT_CHARS", "MAX_UPLOAD_BYTES", "check_params",
           "visitor", "world_examples"]
