"""OpenAIBackend against a real HTTP server on 127.0.0.1 that misbehaves on demand."""

import asyncio
import base64
import dataclasses
import io
import json
import random
import time

import pytest
from openai_server import Fault, OpenAIServer, malformed, no_choices, prompt_text, rate_limited, server_error, slow
from PIL import Image

from silkie import InputError
from silkie.pool.base import GenerationParams, Request
from silkie.pool.openai_backend import OpenAIBackend
from silkie.schema import user_turn

KEY = "sk-test-7f3a9c1e5b"
PARAMS = GenerationParams(max_new_tokens=32)


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    monkeypatch.setenv("SILKIE_TEST_KEY", KEY)
    # A proxy from the environment would carry 127.0.0.1 traffic off the machine.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def make_backend(server, **overrides):
    settings = dict(name="gpt", model="fake-4o", base_url=server.url, api_key_env="SILKIE_TEST_KEY",
                    concurrency=4, timeout=5.0, max_retries=2)
    return OpenAIBackend(**{**settings, **overrides})


def text_request(key, prompt):
    return Request(key, None, [{"role": "user", "content": [{"type": "text", "text": prompt}]}])


def image_request(key, prompt, image):
    return Request(key, image, user_turn(prompt))


def decode_data_url(url):
    header, data = url.split(",", 1)
    return header, Image.open(io.BytesIO(base64.b64decode(data, validate=True)))


def test_results_come_back_in_order_with_usage():
    def responder(body):
        # Early prompts answer last, so completion order is the reverse of request order.
        number = int(prompt_text(body).split()[-1])
        time.sleep(0.01 * (12 - number))
        return f"answer {number}"

    with OpenAIServer(responder=responder) as server:
        requests = [text_request(f"id-{i}", f"question number {i}") for i in range(12)]
        results = make_backend(server).generate(requests, PARAMS)

    assert [r.key for r in results] == [f"id-{i}" for i in range(12)]
    assert [r.text for r in results] == [f"answer {i}" for i in range(12)]
    assert all(r.error is None for r in results)
    assert results[0].usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_decoding_settings_reach_the_request():
    with OpenAIServer() as server:
        backend = make_backend(server, extra_body={"top_k": 5})
        backend.generate([text_request("a", "hi")], GenerationParams(max_new_tokens=7, seed=3))
        backend.generate([text_request("b", "hi")], GenerationParams(temperature=0.7, top_p=0.9, seed=4))
    greedy, sampled = (r.json for r in server.requests)
    assert greedy["model"] == "fake-4o"
    assert greedy["max_tokens"] == 7 and "max_completion_tokens" not in greedy
    assert (greedy["temperature"], greedy["seed"], greedy["top_k"]) == (0.0, 3, 5)
    assert (sampled["temperature"], sampled["top_p"], sampled["seed"]) == (0.7, 0.9, 4)


def test_image_arrives_as_a_downscaled_data_url():
    drawing = Image.new("RGB", (800, 400), "white")
    drawing.paste((200, 0, 0), (400, 100, 500, 200))
    photo = Image.frombytes("RGB", (1000, 1000), random.Random(0).randbytes(1000 * 1000 * 3))
    small = Image.new("RGB", (40, 20), "blue")

    with OpenAIServer() as server:
        requests = [image_request("drawing", "describe", drawing), image_request("photo", "describe", photo),
                    image_request("small", "describe", small)]
        results = make_backend(server, max_image_side=400).generate(requests, PARAMS)
        text_only = make_backend(server).generate([text_request("text", "no image here")], PARAMS)
    assert text_only[0].text == "echo: no image here"
    assert server.requests.pop().json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "no image here"}]}]
    assert [r.text for r in results] == ["echo: describe"] * 3

    sent = {}
    for request in server.requests:
        image_part, text_part = request.json["messages"][0]["content"]
        assert text_part == {"type": "text", "text": "describe"}
        header, image = decode_data_url(image_part["image_url"]["url"])
        sent[image.size, header] = image
    # The longer side is capped with the aspect kept, a small image is left alone, drawings stay
    # lossless PNG and only the noisy photo goes as JPEG.
    assert sorted(sent) == [((40, 20), "data:image/png;base64"), ((400, 200), "data:image/png;base64"),
                            ((400, 400), "data:image/jpeg;base64")]
    assert sent[(400, 200), "data:image/png;base64"].convert("RGB").getpixel((225, 75)) == (200, 0, 0)


def test_a_stored_jpeg_that_fits_is_sent_as_its_own_bytes(tmp_path):
    """Photos are stored as JPEG; re-encoding one would lose quality a second time and cost CPU."""
    from silkie.io import load_image

    photo = Image.frombytes("RGB", (60, 40), random.Random(1).randbytes(60 * 40 * 3)).resize((600, 400))
    files = {"fits": tmp_path / "fits.jpg", "large": tmp_path / "large.jpg", "turned": tmp_path / "turned.jpg",
             "png": tmp_path / "drawing.png"}
    photo.save(files["fits"], quality=85)
    photo.resize((900, 600)).save(files["large"], quality=85)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: a camera held upright; decoders must turn it by 90 degrees
    photo.save(files["turned"], quality=85, exif=exif)
    Image.new("RGB", (50, 30), "red").save(files["png"])

    with OpenAIServer() as server:
        requests = [dataclasses.replace(image_request(name, "describe", load_image(path)), file=path)
                    for name, path in files.items()]
        results = make_backend(server, max_image_side=800).generate(requests, PARAMS)
    assert [r.error for r in results] == [None] * 4
    urls = [request.json["messages"][0]["content"][0]["image_url"]["url"] for request in server.requests]
    by_size = {decode_data_url(url)[1].size: url for url in urls}
    assert set(by_size) == {(600, 400), (800, 533), (400, 600), (50, 30)}
    assert base64.b64decode(by_size[600, 400].split(",", 1)[1]) == files["fits"].read_bytes()
    for size in ((800, 533), (400, 600)):  # downscaled, and turned upright: re-encoded
        assert base64.b64decode(by_size[size].split(",", 1)[1]) not in {p.read_bytes() for p in files.values()}
    assert by_size[50, 30].startswith("data:image/png;base64,")  # only JPEGs go as they are


def test_image_placeholder_mismatch_is_an_item_error():
    image = Image.new("RGB", (8, 8))
    with OpenAIServer() as server:
        results = make_backend(server).generate([
            Request("no-image", None, user_turn("what is this?")),
            Request("no-placeholder", image, [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
            text_request("fine", "hello"),
        ], PARAMS)
    assert "placeholder but the request has no image" in results[0].error
    assert "no image placeholder" in results[1].error
    assert results[2].text == "echo: hello"
    assert len(server.requests) == 1


def test_concurrency_limit_is_respected_and_used():
    with OpenAIServer(latency=0.1) as server:
        results = make_backend(server, concurrency=3).generate(
            [text_request(str(i), f"q{i}") for i in range(12)], PARAMS)
    assert all(r.text for r in results)
    assert server.max_in_flight == 3


@pytest.mark.parametrize("ms", [False, True], ids=["retry-after", "retry-after-ms"])
def test_429_waits_for_retry_after_then_succeeds(ms):
    # 0.6 s is longer than the SDK's first backoff (at most 0.5 s): only honouring the header waits this long.
    with OpenAIServer(faults=[rate_limited(0.6, ms=ms)]) as server:
        [result] = make_backend(server).generate([text_request("a", "hello")], PARAMS)
    assert result.text == "echo: hello"
    assert server.counts == {"429": 1, "ok": 1}
    first, retry = server.requests
    assert retry.time - first.time >= 0.6


def test_rate_limiter_answers_429_and_the_client_gets_through():
    with OpenAIServer(rate_limit=(3, 0.3)) as server:
        results = make_backend(server).generate([text_request(str(i), f"q{i}") for i in range(6)], PARAMS)
    assert [r.text for r in results] == [f"echo: q{i}" for i in range(6)]
    assert server.counts["ok"] == 6 and server.counts["rate_limited"] >= 1
    served = [r.time for r in server.requests if r.outcome == "ok"]
    assert all(later - earlier >= 0.3 for earlier, later in zip(served, served[3:]))


def test_500_is_retried_then_succeeds():
    with OpenAIServer(faults=[server_error()]) as server:
        [result] = make_backend(server).generate([text_request("a", "hello")], PARAMS)
    assert result.text == "echo: hello" and result.error is None
    assert server.counts == {"500": 1, "ok": 1}


def test_exhausted_retries_fail_only_that_item():
    def faults(number, body):
        return server_error() if "doomed" in prompt_text(body) else None

    with OpenAIServer(faults=faults) as server:
        results = make_backend(server, max_retries=1).generate(
            [text_request("a", "fine"), text_request("b", "doomed"), text_request("c", "fine too")], PARAMS)
    assert [r.text for r in results] == ["echo: fine", None, "echo: fine too"]
    assert results[1].error.startswith("InternalServerError: Error code: 500")
    assert server.counts["500"] == 2  # the first try and one retry


def test_timeout_is_an_item_error_while_others_succeed():
    # The slow reply would come after 30 s; leaving the server wakes its handler at once.
    def faults(number, body):
        return slow(30.0) if "slow" in prompt_text(body) else None

    with OpenAIServer(faults=faults) as server:
        results = make_backend(server, timeout=0.3, max_retries=0).generate(
            [text_request("a", "quick"), text_request("b", "slow one"), text_request("c", "quick too")], PARAMS)
        # The batch came back while the slow reply was still unsent: it did not wait for it.
        [slow_request] = [r for r in server.requests if "slow" in prompt_text(r.json)]
        assert slow_request.outcome == "" and server.counts["slow"] == 0
    assert [r.text for r in results] == ["echo: quick", None, "echo: quick too"]
    assert results[1].error == "APITimeoutError: Request timed out."
    assert len(server.requests) == 3  # nothing retried (max_retries=0)


HTML = Fault("html", 200, b"<html>\n<body>Welcome to nginx!</body>\n</html>", {"content-type": "text/html"})


@pytest.mark.parametrize("fault", [malformed(), no_choices(), HTML], ids=["malformed", "no-choices", "html"])
def test_unusable_reply_is_an_item_error(fault):
    def faults(number, body):
        return fault if "bad" in prompt_text(body) else None

    with OpenAIServer(faults=faults) as server:
        results = make_backend(server).generate([text_request("a", "bad"), text_request("b", "good")], PARAMS)
    error = results[0].error
    assert results[0].text is None and error and "\n" not in error
    assert results[1].text == "echo: good"
    assert server.counts[fault.name] == 1  # not retried
    if fault.name == "malformed":
        assert error.startswith("JSONDecodeError")
    elif fault.name == "no_choices":
        assert error == "the response has no choices"
    else:
        assert "expected a JSON chat completion" in error and "Welcome to nginx" in error


def test_api_key_goes_as_bearer_and_never_into_results():
    # A server that quotes the key back in its error body, as some do.
    leaky = Fault("401", 401, json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}."}}).encode())
    with OpenAIServer(faults=[leaky]) as server:
        backend = make_backend(server, concurrency=1)
        results = backend.generate([text_request("a", "one"), text_request("b", "two")], PARAMS)
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {KEY}"}
    assert results[0].error.startswith("AuthenticationError") and "<api key>" in results[0].error
    assert results[1].text == "echo: two"
    for text in [repr(results), repr(backend), json.dumps(dataclasses.asdict(backend)), repr(vars(backend))]:
        assert KEY not in text


def test_missing_key_is_one_clear_input_error(monkeypatch):
    with OpenAIServer() as server:
        monkeypatch.delenv("SILKIE_TEST_KEY")
        with pytest.raises(InputError, match="set the environment variable SILKIE_TEST_KEY") as caught:
            make_backend(server)
        assert "\n" not in str(caught.value)

        # Unset after construction: the batch stops before sending anything.
        monkeypatch.setenv("SILKIE_TEST_KEY", KEY)
        backend = make_backend(server)
        monkeypatch.delenv("SILKIE_TEST_KEY")
        with pytest.raises(InputError, match="SILKIE_TEST_KEY"):
            backend.generate([text_request("a", "hi")], PARAMS)
        assert server.requests == []

        # A server that takes no key needs none.
        [result] = make_backend(server, api_key_env=None).generate([text_request("a", "hi")], PARAMS)
    assert result.text == "echo: hi"
    assert server.requests[0].headers["authorization"] == "Bearer EMPTY"


def test_generate_runs_repeatedly_and_from_async_code():
    with OpenAIServer() as server:
        backend = make_backend(server)
        first = backend.generate([text_request("a", "one")], PARAMS)
        second = backend.generate([text_request("b", "two")], PARAMS)

        async def from_a_coroutine():
            return backend.generate([text_request("c", "three")], PARAMS)

        third = asyncio.run(from_a_coroutine())
    assert [r.text for r in first + second + third] == ["echo: one", "echo: two", "echo: three"]
