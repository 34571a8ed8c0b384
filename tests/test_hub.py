"""The Hub round trip against a real Hub-compatible server on 127.0.0.1 (tests/hub_server.py).

The clients (`load_dataset`, `snapshot_download`, `from_pretrained`, `push_folder`) run in a child process
started with HF_ENDPOINT pointing at the server, a fresh HF_HOME and no offline flags: `huggingface_hub`,
`datasets` and `transformers` read those at import time, so a clean process is the only faithful setup.
The child refuses any connection or DNS lookup off 127.0.0.1 and reports what it refused.
This file is also that child: `python tests/test_hub.py CLIENT ARGS_JSON RESULT_FILE`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from hub_server import HubServer, network_guard

DATASET, PUSHED = "silkie/vlfeedback", "silkie/vlfeedback-pushed"
MODELS = {"tiny-qwen2-vl": "silkie/tiny-qwen2-vl"}
TOKEN = "hf_silkie_test_token"
PROMPT = "How many shapes are in the image?"


# ---------------------------------------------------------------------------------------- clients (child process)

def _datasets():
    import datasets

    datasets.config.USE_PARQUET_EXPORT = False  # else it asks datasets-server.<endpoint host> for exported infos
    return datasets


def _summary(rows, config: str) -> dict:
    from silkie.schema import FEATURES

    images = [img for row in rows for img in (row["images"] if config == "pairs" else [row["image"]])]
    return {"features_equal": rows.features == FEATURES[config], "features": str(rows.features),
            "ids": list(rows["id"]), "image_sizes": sorted({tuple(img.size) for img in images})}


def client_load_dataset(repo: str) -> dict:
    datasets = _datasets()
    default = datasets.load_dataset(repo, split="train")
    pairs = datasets.load_dataset(repo, "pairs")
    streamed = next(iter(datasets.load_dataset(repo, "pairs", split="test", streaming=True)))
    return {"default": _summary(default, "default"), **{f"pairs/{s}": _summary(pairs[s], "pairs") for s in pairs},
            "streamed_first_id": streamed["id"], "streamed_image_size": list(streamed["images"][0].size),
            "streamed_chosen_type": type(streamed["chosen"]).__name__}


def model_logits(model: str, out: str | None = None):
    """Logits of one scene question, through the project's one loading path (chat.load: AutoProcessor and
    AutoModelForImageTextToText.from_pretrained)."""
    import random

    import torch

    from silkie.chat import load
    from silkie.schema import user_turn
    from silkie.world.scenes import draw_scene, render

    loaded = load(model)
    text = loaded.processor.apply_chat_template(user_turn(PROMPT), add_generation_prompt=True)
    inputs = loaded.processor(text=[text], images=[[render(draw_scene(random.Random(0)))]], return_tensors="pt")
    with torch.inference_mode():
        logits = loaded.model(**inputs).logits
    result = {"input_ids": inputs["input_ids"], "logits": logits}
    if out:
        torch.save(result, out)
    return result


def client_models(repos: dict, out_dir: str) -> dict:
    from huggingface_hub import snapshot_download

    result = {}
    for name, repo in repos.items():
        # A cache of its own, so from_pretrained below downloads again rather than reading this one.
        folder = Path(snapshot_download(repo, cache_dir=f"{out_dir}/snapshots"))
        files = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in folder.rglob("*") if p.is_file()}
        model_logits(repo, f"{out_dir}/{name}.pt")
        result[name] = {"snapshot": files}
    return result


def client_push(folder: str, repo: str) -> dict:
    from huggingface_hub import HfApi

    from silkie.hub import push_folder

    first = push_folder(folder, repo)
    second = push_folder(folder, repo)  # nothing changed: must not add a commit
    rows = _datasets().load_dataset(repo, "pairs", split="test")
    return {"messages": [first, second], "pairs_test": _summary(rows, "pairs"),
            "sha": HfApi().dataset_info(repo).sha}


CLIENTS = {f.__name__: f for f in (client_load_dataset, client_models, client_push)}


# ---------------------------------------------------------------------------------------- test side

def run_client(hub, tmp_path: Path, client: str, **kwargs) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")
           and not k.startswith(("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_TOKEN=TOKEN, HF_UPDATE_DOWNLOAD_COUNTS="0",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_UPDATE_CHECK="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               TOKENIZERS_PARALLELISM="false", NO_PROXY="*", no_proxy="*")
    out = tmp_path / f"{client}.json"
    done = subprocess.run([sys.executable, __file__, client, json.dumps(kwargs), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{client} failed:\n{done.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert result.pop("refused_hosts") == [], "a client tried to reach a host other than 127.0.0.1"
    return result


def parquet_ids(folder: Path, split: str) -> list[str]:
    import pyarrow.parquet as pq

    return [i for p in sorted(folder.glob(f"{split}-*.parquet")) for i in pq.read_table(p, columns=["id"])["id"]
            .to_pylist()]


def test_load_dataset_from_the_hub_by_name(built_dataset, tmp_path):
    with HubServer() as hub:
        hub.add_folder("dataset", DATASET, built_dataset)
        got = run_client(hub, tmp_path, "client_load_dataset", repo=DATASET)
    for config, split in (("default", "train"), ("pairs", "train"), ("pairs", "test")):
        loaded = got["default" if config == "default" else f"pairs/{split}"]
        assert loaded["features_equal"], loaded["features"]
        assert loaded["ids"] == parquet_ids(built_dataset / "data" / config, split)  # every row, in order
        assert loaded["image_sizes"] == [[140, 140]]
    assert set(got) == {"default", "pairs/train", "pairs/test", "streamed_first_id", "streamed_image_size",
                        "streamed_chosen_type"}  # no extra split appeared
    assert got["streamed_first_id"] == parquet_ids(built_dataset / "data" / "pairs", "test")[0]
    assert got["streamed_image_size"] == [140, 140] and got["streamed_chosen_type"] == "list"
    shards = {f"/datasets/{DATASET}/resolve/REV/{p.relative_to(built_dataset).as_posix()}"
              for p in (built_dataset / "data").rglob("*.parquet")}
    fetched = {re.sub(r"/resolve/[^/]+/", "/resolve/REV/", e["path"]) for e in hub.log
               if e["method"] == "GET" and e["path"].endswith(".parquet")}
    assert fetched == shards  # the data came from the server, every shard of both configs
    assert {e["host"] for e in hub.log} == {hub.url.removeprefix("http://")}


def test_snapshot_download_and_from_pretrained_by_name(tiny_model_paths, tmp_path):
    import torch
    with HubServer() as hub:
        for name, repo in MODELS.items():
            hub.add_folder("model", repo, tiny_model_paths[name])
        got = run_client(hub, tmp_path, "client_models", repos=MODELS, out_dir=str(tmp_path))
    for name, repo in MODELS.items():
        local = tiny_model_paths[name]
        assert got[name]["snapshot"] == {p.relative_to(local).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                                         for p in local.rglob("*") if p.is_file()}
        remote, here = torch.load(tmp_path / f"{name}.pt"), model_logits(str(local))
        assert torch.equal(remote["input_ids"], here["input_ids"])  # same tokenizer, template and image processor
        torch.testing.assert_close(remote["logits"], here["logits"])  # same weights
        # from_pretrained fetched the weights from the server itself (its cache was not the snapshot's)
        weights = [e for e in hub.log if e["method"] == "GET" and e["path"].startswith(f"/{repo}/resolve/")
                   and e["path"].endswith(".safetensors")]
        assert len(weights) == 2, weights
    assert {e["host"] for e in hub.log} == {hub.url.removeprefix("http://")}


def test_push_folder_uploads_the_built_dataset(built_dataset, tmp_path):
    with HubServer() as hub:
        got = run_client(hub, tmp_path, "client_push", folder=str(built_dataset), repo=PUSHED)
        stored = hub.files("dataset", PUSHED)
        history = hub.history("dataset", PUSHED)
    local = {p.relative_to(built_dataset).as_posix(): p.read_bytes() for p in built_dataset.rglob("*") if p.is_file()}
    assert stored == local  # byte for byte, nothing missing, nothing extra
    assert len(history) == 2, history  # the repo's initial commit and one upload: the second push was a no-op
    writes = [e for e in hub.log if e["method"] == "POST"]
    routes = {re.sub(rf"^/api/datasets/{PUSHED}/(\w+)/main$", r"\1", e["path"]) for e in writes}
    assert routes >= {"/api/repos/create", "preupload", "commit"}, routes
    assert all(e["authorization"] == f"Bearer {TOKEN}" for e in writes)  # the token came from HF_TOKEN
    assert all(hub.url in message for message in got["messages"])  # it names where it uploaded (HF_ENDPOINT)
    assert got["pairs_test"]["features_equal"] and got["pairs_test"]["ids"] == \
        parquet_ids(built_dataset / "data" / "pairs", "test")
    assert got["sha"] == hub.repos["dataset", PUSHED].branches["main"]


if __name__ == "__main__":
    refused = network_guard()
    name, arguments, result_file = sys.argv[1:]
    result = CLIENTS[name](**json.loads(arguments))
    Path(result_file).write_text(json.dumps({**result, "refused_hosts": refused}))
