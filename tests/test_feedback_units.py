"""The judge's parts on their own: prompts and templates, the pacer, the ledger, the config."""

import asyncio
import time

import pytest

from silkie import InputError
from silkie.feedback.annotate import shown_order, swap_checked
from silkie.feedback.limits import BudgetReached, Pacer, Price, SpendLedger
from silkie.feedback.openai_judge import JudgeConfig, estimate_tokens, load_judge_config
from silkie.feedback.prompts import RUBRIC, Prompt, fill_template
from silkie.schema import ASPECTS, user_turn


def test_all_in_one_prompt_has_the_rubric_and_the_papers_layout():
    [request] = Prompt().requests("What is on the table?", ["A cup.", "A red {text_2} mug.", "Nothing."])
    text = request.text
    assert request.aspects == ASPECTS and request.schema is None
    for aspect in ASPECTS:
        assert f"### {aspect}\n" in text and f"#### {aspect} Assessment" in text
        for level, description in enumerate(RUBRIC[aspect][1], start=1):
            assert f"{level}: {description}" in text
    assert text.index("#### Helpfulness") < text.index("#### Ethical") < text.index("#### Visual")
    assert text.count("##### Output for Text 3") == 3 and "Output for Text 4" not in text
    assert "<text 2>\nA red {text_2} mug.\n</text 2>" in text  # a response is shown as written
    assert "What is on the table?" in text


def test_per_aspect_and_json_prompts():
    requests = Prompt("per-aspect").requests("Q?", ["a", "b"])
    assert [r.aspects for r in requests] == [(a,) for a in ASPECTS]
    for request, other in zip(requests, requests[1:] + requests[:1]):
        assert f"Rate the {request.aspects[0]} of each text" in request.text
        assert f"### {other.aspects[0]}" not in request.text  # only its own scale
        assert "Assessment" not in request.text
    [json_request] = Prompt("json").requests("Q?", ["a", "b"])
    schema = json_request.schema["json_schema"]["schema"]
    assert json_request.schema["json_schema"]["strict"] is True
    assert schema["required"] == list(ASPECTS) and schema["additionalProperties"] is False
    column = schema["properties"]["Helpfulness"]
    assert column["minItems"] == column["maxItems"] == 2
    assert list(column["items"]["properties"]) == ["text", "rationale", "rating"]  # reason, then score
    assert {p.version for p in (Prompt(), Prompt("per-aspect"), Prompt("json"))} == {
        "all-in-one-v1", "per-aspect-v1", "json-v1"}


def test_templates():
    # The authors' placeholders; their layout example ("<text 3> [Text 3]") and braces stay as written.
    template = ("Example: <text 3> [Text 3] {\"x\": 1}\nInstruction: [[instruction_placeholder]]\n"
                "- <text 1> [[text_1_placeholder]]\n- <text 2> [[text_2_placeholder]]\n"
                "- <text 3> [[text_3_placeholder]]\n")
    filled = fill_template(template, "What?", ["one [[text_3_placeholder]]", "two"])
    assert filled == ("Example: <text 3> [Text 3] {\"x\": 1}\nInstruction: What?\n"
                      "- <text 1> one [[text_3_placeholder]]\n- <text 2> two\n")
    numbered = fill_template("[[instruction_placeholder]]\n[[texts_placeholder]]", "Q", ["a"])
    assert numbered == "Q\n<text 1>\na\n</text 1>"
    with pytest.raises(InputError, match="placeholders for 3 texts, but an item shows 4"):
        fill_template(template, "Q", ["a", "b", "c", "d"])
    with pytest.raises(InputError, match="needs \\[\\[instruction_placeholder"):
        Prompt(template="Rate [[texts_placeholder]]")
    with pytest.raises(InputError, match="cannot go with --prompt json"):
        Prompt("json", template=template)
    assert Prompt(template=template).version.startswith("template-")
    assert Prompt(template=template).version != Prompt(template=template + " ").version


def test_pacer_spaces_requests_and_tokens(monkeypatch):
    sleeps, sleep = [], asyncio.sleep

    async def counted_sleep(delay, *args, **kwargs):  # the Pacer's only way to wait
        sleeps.append(delay)
        return await sleep(delay, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", counted_sleep)

    # Each take returns no earlier than its booked slot, counted from the first: measured from a
    # stamp taken before it. (Between two returns it can be less: a late wake-up eats into the gap.)
    async def times(pacer, amounts):
        stamps = [time.monotonic()]
        for amount in amounts:
            await pacer.take(amount)
            stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(times(Pacer(6000), [1] * 5))  # one every 10 ms
    assert stamps[-1] - stamps[0] >= 0.039
    stamps = asyncio.run(times(Pacer(600_000), [1000, 5000, 1]))  # tokens: 1000 of them take 0.1 s
    assert stamps[2] - stamps[0] >= 0.099 and stamps[3] - stamps[0] >= 0.599
    assert sleeps  # the count sees the Pacer wait
    sleeps.clear()
    asyncio.run(times(Pacer(None), [10**9, 10**9]))  # no limit: never waits
    assert sleeps == []


def test_pacer_books_slots_in_arrival_order():
    async def run():
        pacer, order = Pacer(60_000), []

        async def one(name, amount):
            await pacer.take(amount)
            order.append((name, time.monotonic()))

        await asyncio.gather(one("a", 100), one("b", 100), one("c", 100))  # 0.1 s each
        return order

    order = asyncio.run(run())
    assert [name for name, _ in order] == ["a", "b", "c"]
    assert order[2][1] - order[0][1] >= 0.19


def test_ledger_holds_the_worst_case_and_charges_the_real_cost():
    ledger = SpendLedger(Price(input=2.0, output=10.0), budget_usd=0.05)
    first = ledger.reserve(10_000, 1000)  # $0.02 + $0.01
    assert first == pytest.approx(0.03)
    with pytest.raises(BudgetReached):
        ledger.reserve(10_000, 1000)  # 0.03 held + 0.03 > 0.05: never sent
    assert ledger.charge(first, {"prompt_tokens": 2000, "completion_tokens": 100}) == pytest.approx(0.005)
    assert ledger.held == pytest.approx(0) and ledger.spent == pytest.approx(0.005)
    second = ledger.reserve(10_000, 1000)  # fits now
    ledger.release(second)  # a request that failed costs nothing
    assert ledger.spent == pytest.approx(0.005) and ledger.held == pytest.approx(0)
    assert SpendLedger(None).reserve(10**9, 10**9) == 0  # no price, no budget: unlimited and unpriced
    with pytest.raises(InputError, match="needs the judge model's price"):
        SpendLedger(None, budget_usd=1.0)


def test_worst_case_tokens_bound_any_tokenizer():
    messages = user_turn("héllo wörld " * 50)
    worst, typical = estimate_tokens(messages, 765, worst=True), estimate_tokens(messages, 765)
    assert worst >= len(("héllo wörld " * 50).encode()) + 765
    assert typical < worst


def test_config_presets_and_overrides(tmp_path):
    config = load_judge_config("gpt-4o")
    assert config.model == "gpt-4o" and config.prompt == "all-in-one" and config.price == Price(2.5, 10.0)
    assert config.api_key_env == "OPENAI_API_KEY"
    mini = load_judge_config("gpt-4o", {"model": "gpt-4o-mini", "rpm": 60, "base_url": None, "batch": True})
    assert (mini.model, mini.rpm, mini.batch, mini.base_url) == ("gpt-4o-mini", 60, True, None)
    assert load_judge_config("gpt-4o", {"model": "my-vllm-model"}).price is None
    with pytest.raises(InputError, match="unknown key 'temperature'"):
        load_judge_config("gpt-4o", {"temperature": 0.5})
    with pytest.raises(InputError, match="unknown prompt"):
        JudgeConfig(prompt="sideways")
    with pytest.raises(InputError, match="rpm must be positive"):
        JudgeConfig(rpm=0)


def test_shown_order_and_swap_sample_are_seeded():
    order = shown_order(4, 0, "item-1")
    assert sorted(order) == [0, 1, 2, 3] and order == shown_order(4, 0, "item-1")
    assert len({tuple(shown_order(4, seed, "item-1")) for seed in range(40)}) > 10
    share = sum(swap_checked(0, f"id-{k}", 0.1) for k in range(4000)) / 4000
    assert 0.08 < share < 0.12
    assert not any(swap_checked(0, f"id-{k}", 0.0) for k in range(100))
