import os

import pytest

# Before anything imports huggingface_hub or datasets: tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def corpus():
    """The mini world's text, which the tiny models' tokenizer learns from."""
    from silkie.world.make import corpus

    return corpus()


@pytest.fixture(scope="session")
def tiny_model_paths(tmp_path_factory, corpus):
    """Both untrained tiny models, written once per session by `silkie world models`."""
    from silkie.cli import main
    from silkie.world.models import BUILDERS

    out = tmp_path_factory.mktemp("tiny-models")
    assert main(["world", "models", "--out", str(out)]) == 0
    return {name: out / name for name in BUILDERS}
