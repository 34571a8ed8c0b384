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


def write_scene_run(run, n: int, seed: int = 3):
    """A run folder of n world instructions, four canned answers each (the reference, a "Yes", a
    hallucination, a refusal) rated by the scene judge: builder and trainer input without a pool."""
    import json
    import random

    from silkie.cli import main
    from silkie.world.judge import SceneJudge

    assert main(["world", "make", "--n", str(n), "--seed", str(seed), "--out", str(run)]) == 0
    judge, rng = SceneJudge(), random.Random(seed)
    models = ["m-good", "m-yes", "m-wrong", "m-refuse"]
    records = [json.loads(line) for line in (run / "instructions.jsonl").read_text().splitlines()]
    with open(run / "completions.jsonl", "w") as completions, open(run / "annotations.jsonl", "w") as annotations:
        for record in records:
            answers = [record["meta"]["answer"], "Yes", "There are 7 shapes and a purple triangle.",
                       "I can't help with that."]
            for model, text in zip(models, answers):
                completions.write(json.dumps({"id": record["id"], "model": model, "response": text,
                                              "generation": {}, "error": None}) + "\n")
            judged = {"name": "scene", "prompt_version": "scene-v1", "order": rng.sample(range(4), 4), "usage": {}}
            rated = judge.rate(record, answers)
            annotations.write(json.dumps({"id": record["id"], "models": models, "annotations": rated,
                                          "judge": judged, "error": None}) + "\n")
    return run


@pytest.fixture(scope="session")
def scene_run(tmp_path_factory):
    return write_scene_run(tmp_path_factory.mktemp("scene-run"), 40)


@pytest.fixture(scope="session")
def built_dataset(scene_run):
    """The scene run built into a Hub-ready dataset folder once per session."""
    from silkie.build import build

    out, _, _ = build(scene_run / "vlfeedback", run_dir=scene_run)
    return out
