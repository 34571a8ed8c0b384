"""The Space: an exported Space folder served on 127.0.0.1 and driven with gradio_client and a
headless Chromium; the engine's streaming, concurrency, memory and judges checked directly."""

import gc
import importlib.util
import json
import os
import re
import struct
import threading
import warnings
import zlib
from pathlib import Path

import httpx
import pytest
import yaml
from openai_server import OpenAIServer

from silkie import InputError, space
from silkie.cli import main
from silkie.schema import ASPECTS
from silkie.space import judging
from silkie.space.browser import open_dataset

SOURCE = "git+https://example.invalid/silkie.git@v0.1.0"
ENV = ("SILKIE_BASE_MODEL", "SILKIE_ADAPTER", "SILKIE_DATASET", "SILKIE_JUDGE_MODEL", "SILKIE_JUDGE_BASE_URL",
       "OPENAI_API_KEY", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
TOKENS = 64


@pytest.fixture(scope="module", autouse=True)
def environment():
    with pytest.MonkeyPatch.context() as patch:
        for name in ENV:
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A LoRA on world:mini-base with seeded random weights (lora_B is zero when made), small enough
    that Silkie still writes sentences, large enough that it answers differently. It sits where
    `silkie run` puts it, in a run whose instructions are a few mini-world scenes."""
    import torch
    from peft import LoraConfig, get_peft_model

    from silkie.chat import load

    run = tmp_path_factory.mktemp("run")
    assert main(["world", "make", "--n", "6", "--seed", "7", "--out", str(run)]) == 0
    out = run / "train" / "adapter"
    model = get_peft_model(load("world:mini-base").model,
                           LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)"))
    generator = torch.Generator().manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.1
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def merged(tmp_path_factory, adapter):
    """The adapter merged into a full model, as `silkie export --merge` writes it."""
    from silkie.train.export import export

    return export(adapter, tmp_path_factory.mktemp("merged") / "silkie", merge=True)


@pytest.fixture(scope="module")
def merged_engine(merged):
    """An engine serving the merged model, and how many models building it made."""
    before = pretrained_models()
    engine = space.Engine(space.Settings(adapter=str(merged), dataset=None))
    return engine, len(pretrained_models() - before)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """The app's mini-world examples by kind, each image also as a file to upload."""
    folder = tmp_path_factory.mktemp("examples")
    found = {}
    for example in space.world_examples():
        example["file"] = folder / f"{example['kind']}.png"
        example["image"].save(example["file"])
        found[example["kind"]] = example
    return found


@pytest.fixture(scope="module")
def expected(adapter, examples):
    """What each model answers alone, through chat.py: the panes must show exactly this."""
    from silkie.chat import chat, load

    base, silkie = load("world:mini-base"), load("world:mini-base", adapter=str(adapter))
    return {kind: (chat(base, e["image"], e["prompt"], TOKENS), chat(silkie, e["image"], e["prompt"], TOKENS))
            for kind, e in examples.items() if kind in ("describe", "count", "color")}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, adapter, built_dataset):
    out = tmp_path_factory.mktemp("space") / "silkie-space"
    assert main(["space", "--export", str(out), "--adapter", str(adapter), "--dataset", str(built_dataset),
                 "--source", SOURCE]) == 0
    return out


def pretrained_models() -> set[int]:
    """Every whole model alive (a Qwen2-VL holds three more PreTrainedModels inside it)."""
    from transformers import PreTrainedModel

    gc.collect()
    with warnings.catch_warnings():  # isinstance() touches deprecated torch aliases on the way
        warnings.simplefilter("ignore")
        models = [o for o in gc.get_objects() if isinstance(o, PreTrainedModel)]
    inside = {id(m) for model in models for m in model.modules() if m is not model}
    return {id(model) for model in models if id(model) not in inside}


@pytest.fixture(scope="module")
def served(exported):
    """The exported app.py, built and served on 127.0.0.1; also how many models building it made."""
    spec = importlib.util.spec_from_file_location("exported_space_app", exported / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    before = pretrained_models()
    demo = app.build()
    models = len(pretrained_models() - before)
    _, url, _ = space.serve(demo, host="127.0.0.1", block=False)
    yield {"url": url, "models": models}
    demo.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served["url"], verbose=False)


@pytest.fixture(scope="module")
def engine(adapter):
    return space.Engine(space.Settings(adapter=str(adapter), dataset=None))


def ask(client, file, prompt, tokens=TOKENS, **settings):
    from gradio_client import handle_file

    job = client.submit(handle_file(str(file)) if file else None, prompt, tokens, settings.get("temperature", 0),
                        settings.get("top_p", 1), api_name="/ask")
    return job.result(), job.outputs()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG file that claims a huge size: a decompression bomb, caught from its header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


# ---- the served app ----------------------------------------------------------------------------

def test_both_panes_stream_each_models_own_answer(client, examples, expected):
    streamed = {}
    for kind, (base, silkie) in expected.items():
        (got_base, got_silkie, note), streamed[kind] = ask(client, examples[kind]["file"], examples[kind]["prompt"])
        assert (got_base, got_silkie, note) == (base, silkie, ""), kind
    assert expected["describe"][0] != expected["describe"][1]  # the adapter changes what Silkie says
    # streamed: an update per token, each pane's text growing to the final answer
    updates = streamed["describe"]
    assert len(updates) > 10
    for pane in (0, 1):
        texts = [update[pane] for update in updates]
        assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))


def test_bad_input_gets_a_message_not_a_traceback(client, examples, tmp_path):
    example = examples["describe"]
    text, bomb, cut = tmp_path / "notes.png", tmp_path / "bomb.png", tmp_path / "cut.png"
    text.write_text("not an image")
    bomb.write_bytes(png_header(5000, 5000))
    cut.write_bytes(example["file"].read_bytes()[:300])
    cases = {text: "not an image in an allowed format", bomb: "5000x5000 pixels exceeds the limit",
             cut: "truncated or corrupt image", None: "Upload an image first"}
    for file, reason in cases.items():
        (base, silkie, note), _ = ask(client, file, "What is this?")
        assert note.startswith("⚠️") and reason in note and (base, silkie) == ("", "")
    for prompt, reason in (("   ", "Type a question"), ("x" * 3000, "the limit is 2000")):
        assert reason in ask(client, example["file"], prompt)[0][2]


def test_uploads_and_paths_are_confined(client, served, examples, tmp_path):
    from gradio_client import handle_file

    big = tmp_path / "big.png"
    big.write_bytes(example_bytes := examples["count"]["file"].read_bytes())
    with open(big, "ab") as f:
        f.write(os.urandom(space.MAX_UPLOAD_BYTES))  # a valid PNG with trailing bytes, over the limit
    with pytest.raises(ValueError, match="maximum file size"):  # the client knows the limit
        client.predict(handle_file(str(big)), "hi", api_name="/ask")
    upload = httpx.post(served["url"] + "gradio_api/upload", files={"files": ("big.png", big.read_bytes())})
    assert upload.status_code == 413  # and the server enforces it
    assert httpx.post(served["url"] + "gradio_api/upload", files={"files": ("ok.png", example_bytes)}).is_success
    # a file path on the server, named by the client, is never opened
    data = [{"path": str(Path(space.__file__)), "meta": {"_type": "gradio.FileData"}}, "hi", 8, 0, 1]
    event = httpx.post(served["url"] + "gradio_api/call/ask", json={"data": data}).json()["event_id"]
    stream = httpx.get(served["url"] + f"gradio_api/call/ask/{event}", timeout=30).text
    assert "event: error" in stream and "import" not in stream


def test_judge_uses_the_scene_truth_and_says_when_it_cannot(client, examples, tmp_path):
    from gradio_client import handle_file

    example = examples["describe"]
    (base, silkie, _), _ = ask(client, example["file"], example["prompt"])
    verdict = client.predict(handle_file(str(example["file"])), example["prompt"], base, silkie, api_name="/judge")
    assert "scene judge" in verdict and "| | Base | Silkie |" in verdict
    for aspect in ASPECTS:
        assert verdict.count(f"| {aspect} | **") == 1
    # another world question about the same scene is judged too; a question outside the world is not
    count = "How many shapes are there in the image?"
    assert "scene judge" in client.predict(handle_file(str(example["file"])), count, "There are 3 shapes.",
                                           "There are 2 shapes.", api_name="/judge")
    assert "not this question" in client.predict(handle_file(str(example["file"])), "Is it art?", "Yes", "No",
                                                 api_name="/judge")
    from PIL import Image

    other = tmp_path / "other.png"
    Image.new("RGB", (64, 64), "orange").save(other)
    refused = client.predict(handle_file(str(other)), example["prompt"], "A", "B", api_name="/judge")
    assert refused.startswith("⚠️ Cannot judge") and "SILKIE_JUDGE_MODEL" in refused


def test_dataset_browser_filters_and_shows_rows(client, built_dataset):
    from datasets import load_dataset

    rows = load_dataset(str(built_dataset), "default", split="train")

    def rating(row, model, aspect):
        completions = row["completions"]
        return int(completions["annotations"][completions["model"].index(model)][aspect]["Rating"])

    found, _, _, shown = client.predict("(any)", "m-yes", "Visual Faithfulness", 4, 5, 0, api_name="/browse")
    matches = [row for row in rows if rating(row, "m-yes", "Visual Faithfulness") >= 4]
    assert found == f"{len(matches)} of {len(rows)} rows match." and 0 < len(matches) < len(rows)
    first = matches[0]
    assert first["prompt"] in shown and all(f". {model}" in shown for model in first["models"])
    found, _, _, _ = client.predict("(any)", "(any)", "(any)", 1, 5, 4, api_name="/browse")
    assert found == f"0 of {len(rows)} rows match."  # no row spans the whole scale


def test_one_copy_of_the_base_weights(served, engine, adapter):
    """Building the app makes one model; Silkie is LoRA layers wrapped around its weights."""
    from safetensors.torch import load_file

    from silkie.chat import load

    assert served["models"] == 1
    model = engine.loaded.model
    storages = {}
    for name, parameter in model.named_parameters():
        storages.setdefault(parameter.untyped_storage().data_ptr(), (name, parameter.untyped_storage().nbytes()))
    base = sum(p.untyped_storage().nbytes() for p in load("world:mini-base").model.parameters())
    lora = sum(t.untyped_storage().nbytes() for t in load_file(adapter / "adapter_model.safetensors").values())
    assert sum(nbytes for _, nbytes in storages.values()) == base + lora


def test_a_merged_model_costs_a_second_copy_and_the_page_says_so(merged_engine, merged, monkeypatch):
    import gradio as gr

    from silkie.chat import load

    engine, models = merged_engine
    assert (models, engine.base, engine.silkie, engine.silkie_note) == (2, "world:mini-base", str(merged), None)
    base = sum(p.untyped_storage().nbytes() for p in load("world:mini-base").model.parameters())
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes()
                for loaded in (engine.loaded, engine.merged) for p in loaded.model.parameters()}
    assert sum(storages.values()) == 2 * base
    monkeypatch.setattr(space, "Engine", lambda config: engine)
    demo = space.load_app().build(space.Settings(adapter=str(merged), dataset=None))
    texts = {block.elem_id: block for block in demo.blocks.values() if isinstance(block, (gr.Markdown, gr.Textbox))}
    assert texts["merged-note"].value == space.MERGED_NOTE and "second full copy" in space.MERGED_NOTE
    assert texts["silkie-answer"].label.endswith("(merged model)")


def test_a_merged_model_streams_beside_the_unchanged_base(merged_engine, merged, examples, expected):
    from silkie.chat import chat, load

    engine, _ = merged_engine
    example = examples["describe"]
    silkie = chat(load(str(merged)), example["image"], example["prompt"], TOKENS)
    updates = list(engine.answer(str(example["file"]), example["prompt"], TOKENS))
    assert updates[-1] == (expected["describe"][0], silkie, "") and silkie != expected["describe"][0]
    for pane in (0, 1):  # each pane streamed: many updates, its text growing to the final answer
        texts = [update[pane] for update in updates]
        assert len(set(texts)) > 10 and all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    # sampled answers (the models then take turns) are repeatable, and the lock is held throughout
    sampled = [list(engine.answer(str(example["file"]), example["prompt"], 16, 1.2, 0.9))[-1] for _ in range(2)]
    assert sampled[0] == sampled[1] and all(sampled[0][:2]) and not engine.lock.locked()
    with engine.lock, pytest.raises(InputError, match="busy"), pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine.config, "timeout", 0.01)
        list(engine.answer(str(example["file"]), example["prompt"]))


# ---- the engine --------------------------------------------------------------------------------

def test_concurrent_requests_get_the_sequential_answers(engine, examples):
    requests = [(e["file"], e["prompt"]) for e in examples.values()]
    final = lambda file, prompt: list(engine.answer(str(file), prompt, TOKENS))[-1]  # noqa: E731
    sequential = [final(*request) for request in requests]
    results, start = [None] * len(requests), threading.Barrier(len(requests))

    def worker(i):
        start.wait()
        results[i] = final(*requests[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == sequential
    assert len({answer[0] for answer in sequential}) > 1


def test_time_limits_cut_answers_and_waits(engine, examples, expected, monkeypatch):
    example, full = examples["describe"], expected["describe"][0]
    monkeypatch.setattr(engine.config, "timeout", 0.01)  # less than the first step takes
    base, silkie, note = list(engine.answer(str(example["file"]), example["prompt"], space.MAX_NEW_TOKENS))[-1]
    assert note.startswith("Stopped at the 0.01 s limit") and full.startswith(base) and len(base) < len(full)
    with engine.lock, pytest.raises(InputError, match="busy"):  # another visitor holds the model
        list(engine.answer(str(example["file"]), example["prompt"]))


def test_generation_settings_are_checked(client, examples):
    assert space.check_params("32", 0.7, 0.9).max_new_tokens == 32
    for bad in ((0, 0, 1), (space.MAX_NEW_TOKENS + 1, 0, 1), (8, -1, 1), (8, 0, 0), (8, float("nan"), 1), ("x", 0, 1)):
        with pytest.raises(InputError, match="Settings out of range|must be numbers"):
            space.check_params(*bad)
    example = examples["describe"]
    sampled = [ask(client, example["file"], example["prompt"], temperature=1.2, top_p=0.9)[0] for _ in range(2)]
    assert sampled[0] == sampled[1] and all(sampled[0][:2])  # seeded: the same draw twice


def two_ratings(body) -> str:
    """A judge's reply rating Text 1 a 3 and Text 2 a 4 on every aspect."""
    lines = []
    for aspect in ASPECTS:
        lines += [f"#### {aspect} Assessment"]
        for j in (1, 2):
            lines += [f"##### Output for Text {j}", f"Rating: {j + 2}", f"Rationale: Text {j} seen."]
    return "\n".join(lines)


def test_openai_judge_rates_any_image(engine, examples, monkeypatch, tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (80, 60), "orange").save(photo)
    with OpenAIServer(responder=two_ratings) as server:
        monkeypatch.setenv("SILKIE_JUDGE_MODEL", "judge-test")
        monkeypatch.setenv("SILKIE_JUDGE_BASE_URL", server.url)
        verdict = engine.judge(str(photo), "What colour is this?", "Orange.", "It is orange.")
        scene = engine.judge(str(examples["count"]["file"]), examples["count"]["prompt"], "There is 1 shape.",
                             "There are 2 shapes.")
    assert "judge-test" in verdict and "| Helpfulness | **3** · Text 1 seen. | **4** · Text 2 seen. |" in verdict
    assert "scene judge" in scene  # ground truth, where there is one, comes first
    assert server.counts["ok"] == 1


def test_the_paid_judge_takes_bounded_answers_within_its_allowance(adapter, monkeypatch, tmp_path):
    """Served with 1 call a visitor an hour and 2 a day: an oversized answer is refused before any
    request; each visitor (told by the proxy's last X-Forwarded-For entry) gets one call, the Space two."""
    from gradio_client import Client, handle_file
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (80, 60), "orange").save(photo)
    with OpenAIServer(responder=two_ratings) as server:
        monkeypatch.setenv("SILKIE_JUDGE_MODEL", "judge-test")
        monkeypatch.setenv("SILKIE_JUDGE_BASE_URL", server.url)
        demo = space.load_app().build(space.Settings(adapter=str(adapter), dataset=None, judge_calls_per_visitor=1,
                                                     judge_calls_per_day=2))
        _, url, _ = space.serve(demo, host="127.0.0.1", block=False)
        try:
            clients = {who: Client(url, verbose=False, headers={"x-forwarded-for": f"198.51.100.9, 203.0.113.{who}"})
                       for who in (1, 2, 3)}  # the first entry is the visitor's to invent: not who they are

            def judge(who, base="Orange."):
                return clients[who].predict(handle_file(str(photo)), "What colour is this?", base, "It is orange.",
                                            api_name="/judge")

            too_long = space.MAX_ANSWER_CHARS + 1
            assert judge(1, "x" * too_long).startswith(f"⚠️ An answer is {too_long} characters long")
            assert not server.requests
            assert "judge-test" in judge(1)
            assert judge(1).startswith("⚠️ You have used your judge calls for this hour (1 a visitor); try again in 60 ")
            assert "judge-test" in judge(2)
            assert judge(3).startswith("⚠️ The judge has reached this Space's limit of 2 calls a day; try again in 24 ")
        finally:
            demo.close()
    assert server.counts == {"ok": 2} and len(server.requests) == 2


def test_the_allowance_counts_calls_in_sliding_windows():
    now = [0.0]
    allowance = judging.Allowance(per_visitor=2, per_day=3, clock=lambda: now[0])
    allowance.take("a")
    allowance.take("a")
    with pytest.raises(InputError, match="for this hour"):
        allowance.take("a")
    now[0] = judging.HOUR + 1  # the first hour's calls no longer count against "a", but still against the day
    allowance.take("a")
    with pytest.raises(InputError, match="limit of 3 calls a day"):
        allowance.take("b")
    now[0] = judging.DAY + 1  # the first two calls have left the day
    allowance.take("b")
    assert [who for _, who in allowance.calls] == ["a", "b"]  # only the last day's calls are kept
    with pytest.raises(InputError, match="turned off"):
        judging.Allowance(per_visitor=5, per_day=0).take("a")
    assert space.visitor("10.16.3.80", "1.2.3.4, 203.0.113.7") == "203.0.113.7"  # behind a proxy
    assert space.visitor("8.8.8.8", "203.0.113.7") == "8.8.8.8"  # not a proxy: its header is not believed
    assert space.visitor(None, None) == "unknown"


def test_uploads_are_swept_by_size_and_age_and_gone_at_shutdown(adapter, monkeypatch, tmp_path):
    """Uploads sent outside the queue (no handler ever sees them): the oldest go once they hold more
    than the byte bound, the rest once older than the age, and the last one when the app closes."""
    from silkie.space.inputs import read_image

    monkeypatch.setattr(space.deploy, "UPLOAD_SWEEP_S", 1)
    monkeypatch.setattr(space.deploy, "UPLOADS_MAX_AGE_S", 4)
    monkeypatch.setattr(space.deploy, "UPLOADS_MAX_BYTES", 2500)
    demo = space.load_app().build(space.Settings(adapter=str(adapter), dataset=None))
    folder = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))  # read when the server starts: this app's uploads only
    _, url, _ = space.serve(demo, host="127.0.0.1", block=False)

    def upload(i):
        sent = httpx.post(url + "gradio_api/upload", files={"files": (f"{i}.bin", os.urandom(1000))})
        return Path(sent.json()[0])

    def wait_until(done, seconds):
        for _ in range(int(seconds * 20)):
            if done():
                return True
            threading.Event().wait(0.05)
        return done()

    try:
        paths = [upload(i) for i in range(4)]
        assert all(path.is_file() and folder in path.parents for path in paths)
        assert wait_until(lambda: not paths[1].exists(), 3)  # over 2,500 bytes: the oldest go first
        assert [path.exists() for path in paths] == [False, False, True, True] and not paths[0].parent.exists()
        assert wait_until(lambda: not any(path.exists() for path in paths), 8)  # then by age
        with pytest.raises(InputError, match="upload has expired"):
            read_image(str(paths[3]))
        last = upload(4)
        assert last.is_file()
    finally:
        demo.close()
    assert not last.parent.exists() and not [path for path in folder.rglob("*") if path.is_file()]


def ratings(verdict: str) -> dict[str, dict[str, int]]:
    """{aspect: {pane: rating}} read back from the judge's table, a column per pane."""
    lines = verdict.splitlines()
    panes = [name.strip() for name in next(line for line in lines if line.startswith("| |")).strip("| ").split("|")]
    table = {}
    for aspect in ASPECTS:
        cells = next(line for line in lines if line.startswith(f"| {aspect} |")).strip("| ").split("|")[1:]
        table[aspect] = {pane: int(re.match(r"\s*\*\*(\d)\*\*", cell)[1]) for pane, cell in zip(panes, cells)}
    return table


def test_each_answer_is_rated_in_its_own_pane(engine, examples):
    """A right and a wrong answer, in both orders: the right one's ratings are always the higher."""
    example = examples["count"]
    right = judging.world_instruction(example["scene"], example["prompt"])["meta"]["answer"]
    wrong = "There are 9 shapes."
    for base, silkie in ((right, wrong), (wrong, right)):
        table = ratings(engine.judge(str(example["file"]), example["prompt"], base, silkie))
        good, bad = ("Base", "Silkie") if base == right else ("Silkie", "Base")
        for aspect in ("Helpfulness", "Visual Faithfulness"):
            assert table[aspect][good] > table[aspect][bad], (aspect, good, table)
        assert table["Ethical Considerations"][good] >= table["Ethical Considerations"][bad]


def test_the_space_judges_any_scene_of_its_run(engine, adapter, examples, monkeypatch):
    """An image from the served run's images/ (not one of the examples), given in memory, gets the
    scene judge; the run is read once, on the first image that is not an example."""
    from silkie.io import load_image

    run = adapter.parent.parent
    records = [json.loads(line) for line in (run / "instructions.jsonl").read_text().splitlines()]
    record = next(r for r in records if r["meta"]["task"] == "color")
    image = load_image(run / record["image"])
    assert judging.pixel_key(image) not in {judging.pixel_key(e["image"]) for e in examples.values()}
    verdict = engine.judge(image, record["prompt"], record["meta"]["answer"], "It is a circle.")
    assert "scene judge" in verdict and ratings(verdict)["Helpfulness"]["Base"] == 5
    # another world question about the same scene is judged against the run's scene too
    assert "scene judge" in engine.judge(image, "How many shapes are there in the image?", "1.", "2.")

    reads = []
    monkeypatch.setattr(judging, "run_scenes", lambda run: reads.append(run) or {})
    scenes = judging.SceneIndex([], run)
    assert scenes.find(image, record["prompt"]) == (None, None) and scenes.find(image, "?") == (None, None)
    assert reads == [run]


def test_without_a_run_the_page_says_what_to_do(tmp_path, monkeypatch, examples):
    monkeypatch.chdir(tmp_path)
    settings = space.settings()
    assert settings.adapter == "runs/mini/train/adapter" and settings.dataset == "runs/mini/vlfeedback"
    engine = space.Engine(settings)
    assert "run `silkie run` first" in engine.silkie_note and engine.base == "world:mini-base"
    base, silkie, note = list(engine.answer(str(examples["color"]["file"]), examples["color"]["prompt"], 16))[-1]
    assert base and silkie == engine.silkie_note and note == ""
    assert "run `silkie run` first" in open_dataset(settings.dataset)[1]


def test_settings_precedence(monkeypatch, tmp_path):
    (tmp_path / "adapter").mkdir()
    file = tmp_path / space.SETTINGS_FILE
    file.write_text(json.dumps({"base": "world:mini-base", "adapter": "adapter", "dataset": "org/data"}))
    assert space.settings(file=file) == space.Settings("world:mini-base", str(tmp_path / "adapter"), "org/data")
    assert space.settings(file=tmp_path / "absent.json") == space.Settings()  # no file: the defaults
    monkeypatch.setenv("SILKIE_ADAPTER", "org/silkie")
    monkeypatch.setenv("SILKIE_DATASET", "")  # empty: none
    assert space.settings(file=file) == space.Settings("world:mini-base", "org/silkie", None)
    chosen = space.settings(run="runs/x", base="org/base", file=file)
    assert chosen == space.Settings("org/base", "runs/x/train/adapter", "runs/x/vlfeedback", run="runs/x")
    file.write_text(json.dumps({"adaptor": "org/silkie"}))  # a typo is an error, not the default served
    with pytest.raises(InputError, match="keys among"):
        space.settings(file=file)
    # the judge's allowance: the file, then the environment; whole numbers only
    assert (space.Settings().judge_calls_per_visitor, space.Settings().judge_calls_per_day) == (10, 200)
    file.write_text(json.dumps({"judge_calls_per_visitor": 3, "judge_calls_per_day": 50}))
    assert (space.settings(file=file).judge_calls_per_visitor, space.settings(file=file).judge_calls_per_day) == (3, 50)
    monkeypatch.setenv("SILKIE_JUDGE_CALLS_PER_DAY", "0")
    assert space.settings(file=file).judge_calls_per_day == 0
    for bad in ("ten", "-1"):
        monkeypatch.setenv("SILKIE_JUDGE_CALLS_PER_DAY", bad)
        with pytest.raises(InputError, match="SILKIE_JUDGE_CALLS_PER_DAY must be|judge_calls_per_day must be"):
            space.settings(file=file)
    file.write_text(json.dumps({"judge_calls_per_visitor": "3"}))
    with pytest.raises(InputError, match="whole numbers for"):
        space.settings(file=file)


def test_an_exported_space_serves_what_its_settings_file_names(exported, engine, adapter, monkeypatch):
    """The exported app.py builds from silkie_space.json; a Space variable overrides the file."""
    import gradio as gr

    spec = importlib.util.spec_from_file_location("exported_space_settings", exported / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    served = []
    monkeypatch.setattr(space, "Engine", lambda config: served.append(config) or engine)
    app.build()
    assert served[-1] == space.Settings("world:mini-base", str(exported / "adapter"), str(exported / "vlfeedback"))
    monkeypatch.setenv("SILKIE_ADAPTER", str(adapter))
    monkeypatch.setenv("SILKIE_DATASET", "")
    demo = app.build()
    assert served[-1] == space.Settings("world:mini-base", str(adapter), None)
    texts = {block.elem_id: block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown)}
    assert texts["dataset-missing"].startswith("No dataset configured")


def test_export_writes_a_ready_to_push_space(exported, adapter, tmp_path, capsys):
    import gradio

    assert (exported / "app.py").read_bytes() == space.deploy.APP.read_bytes()  # the app as shipped
    assert json.loads((exported / space.SETTINGS_FILE).read_text()) == {
        "base": "world:mini-base", "adapter": "adapter", "dataset": "vlfeedback"}
    assert (exported / "adapter" / "adapter_config.json").is_file()
    assert (exported / "vlfeedback" / "README.md").is_file()
    _, front, body = (exported / "README.md").read_text().split("---\n", 2)
    meta = yaml.safe_load(front)
    assert (meta["sdk"], meta["app_file"], meta["license"]) == ("gradio", "app.py", "apache-2.0")
    assert meta["sdk_version"] == gradio.__version__ and meta["models"] == [] and "datasets" not in meta
    assert "# Silkie, next to its base model" in body
    assert f"silkie @ {SOURCE}" in (exported / "requirements.txt").read_text().splitlines()
    wheel = tmp_path / "silkie-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    for source, reason in ((None, "needs --source"), (str(wheel), "local file; upload it")):
        flags = ["--source", source] if source else []
        assert main(["space", "--export", str(tmp_path / "x"), "--adapter", str(adapter), *flags]) == 2
        assert reason in capsys.readouterr().err
    hub = ["--base", "Qwen/Qwen2-VL-2B-Instruct", "--adapter", "org/silkie", "--dataset", "org/vlfeedback"]
    wheel_url = "https://example.invalid/silkie-0.1.0-py3-none-any.whl"
    assert main(["space", "--export", str(tmp_path / "y"), *hub, "--source", wheel_url]) == 0
    meta = yaml.safe_load((tmp_path / "y" / "README.md").read_text().split("---\n")[1])
    assert meta["models"] == ["Qwen/Qwen2-VL-2B-Instruct", "org/silkie"] and meta["datasets"] == ["org/vlfeedback"]
    assert meta["emoji"] == "🪡" and f"silkie @ {wheel_url}" in (tmp_path / "y" / "requirements.txt").read_text()
    assert json.loads((tmp_path / "y" / space.SETTINGS_FILE).read_text()) == {
        "base": "Qwen/Qwen2-VL-2B-Instruct", "adapter": "org/silkie", "dataset": "org/vlfeedback"}
    assert not (tmp_path / "y" / "adapter").exists()


# ---- a real browser ----------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
# Without the networking flags Chromium's background connections are refused on a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                    reason="no Debian chromium: apt-get install chromium chromium-driver (CI installs it)")
def test_a_person_uploads_asks_and_judges_in_chromium(served, examples, expected, tmp_path):
    from playwright.sync_api import sync_playwright

    example = examples["describe"]
    base, silkie = expected["describe"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(served["url"])
            page.locator("#image input[type=file]").set_input_files(example["file"])
            page.locator("#prompt textarea").fill(example["prompt"])
            page.click("#ask")
            page.wait_for_function("([base, silkie]) => document.querySelector('#base-answer textarea').value === base"
                                   " && document.querySelector('#silkie-answer textarea').value === silkie",
                                   arg=[base, silkie], timeout=30_000)
            page.click("#judge")
            page.wait_for_selector("#verdict table", timeout=30_000)
            verdict = page.locator("#verdict").inner_text()
            screenshot = tmp_path / "space.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert "scene judge" in verdict and all(aspect in verdict for aspect in ASPECTS)
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")
