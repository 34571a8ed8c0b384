"""Silkie next to its base model: a Gradio Space.

Upload an image, ask a question and watch both models answer side by side, then have a judge rate
the two answers; a second tab browses the VLFeedback data Silkie learned from. Runs as a Hugging
Face Space (`python app.py`) or locally (`silkie space`). Settings, each a path or a Hub id:
SILKIE_BASE_MODEL, SILKIE_ADAPTER (a LoRA adapter, or a merged Silkie model at the cost of a second
copy of the weights), SILKIE_DATASET (default: what `silkie run` leaves in runs/mini);
SILKIE_JUDGE_MODEL (+ OPENAI_API_KEY or SILKIE_JUDGE_BASE_URL) to judge any image, paid per call,
so counted: SILKIE_JUDGE_CALLS_PER_VISITOR an hour (default 10), SILKIE_JUDGE_CALLS_PER_DAY for all
visitors together (default 200). An exported Space names what it serves in silkie_space.json beside
this file; the environment overrides it.
"""

import logging
from pathlib import Path

import gradio as gr

from silkie import InputError, space
from silkie.schema import ASPECTS
from silkie.space.browser import Browser, open_dataset

log = logging.getLogger("silkie.space")
ANY = "(any)"


def unopened(payload):
    """Hands the handler the upload's path (Gradio has confined it to its upload folder) instead of
    the image gr.Image would decode first, so a bad file ends in our message, not a bare "Error"."""
    return None if payload is None else payload.path


def message(error: Exception) -> str:
    """What a visitor reads instead of a traceback."""
    if isinstance(error, InputError):
        return f"⚠️ {error}"
    log.exception("request failed", exc_info=error)
    return f"⚠️ Something went wrong ({type(error).__name__}); please try again."


def build(config: space.Settings | None = None) -> gr.Blocks:
    config = config or space.settings(file=Path(__file__).parent / space.SETTINGS_FILE)  # written by --export
    engine = space.Engine(config)
    browser, missing = open_dataset(config.dataset)

    def ask(image, prompt, max_new_tokens, temperature, top_p):
        try:
            yield from engine.answer(image, prompt, max_new_tokens, temperature, top_p)
        except Exception as error:  # noqa: BLE001 - a visitor sees a message, never a traceback
            yield "", engine.silkie_note or "", message(error)

    def judge(image, prompt, base_answer, silkie_answer, request: gr.Request):
        try:
            visitor = space.visitor(getattr(request.client, "host", None), request.headers.get("x-forwarded-for"))
            return engine.judge(image, prompt, base_answer, silkie_answer, visitor)
        except Exception as error:  # noqa: BLE001
            return message(error)

    with gr.Blocks(title="Silkie vs its base model", analytics_enabled=False) as demo:
        gr.Markdown("# Silkie, next to its base model\nThe same vision-language model before and after DPO on "
                    "AI feedback (VLFeedback). Ask both about an image, then judge the answers.")
        if engine.problem:
            gr.Markdown(f"⚠️ {engine.problem}")
        if engine.merged:
            gr.Markdown(space.MERGED_NOTE, elem_id="merged-note")
        with gr.Tab("Ask"):
            with gr.Row():
                with gr.Column(scale=2):
                    image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], format="png",
                                     height=280, elem_id="image")
                    image.preprocess = unopened  # one instance; a subclass would make Gradio write app.pyi
                    prompt = gr.Textbox(label="Question", lines=2, max_length=space.MAX_PROMPT_CHARS,
                                        placeholder="What do you see in this image?", elem_id="prompt")
                    with gr.Accordion("Generation settings", open=False):
                        max_new_tokens = gr.Slider(1, space.MAX_NEW_TOKENS, value=96, step=1, label="Max new tokens")
                        temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0: greedy)")
                        top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="Top-p")
                    with gr.Row():
                        submit = gr.Button("Ask both", variant="primary", elem_id="ask")
                        rate = gr.Button("Judge both answers", elem_id="judge")
                with gr.Column(scale=3):
                    adapter = space.shown(engine.silkie) if engine.silkie else "no adapter"
                    if engine.merged:
                        adapter += " (merged model)"
                    with gr.Row():
                        base = gr.Textbox(label=f"Base · {space.shown(engine.base)}", lines=9, interactive=False,
                                          elem_id="base-answer")
                        silkie = gr.Textbox(label=f"Silkie · {adapter}", lines=9, value=engine.silkie_note,
                                            interactive=False, elem_id="silkie-answer")
                    note = gr.Markdown(elem_id="note")
                    verdict = gr.Markdown(elem_id="verdict")
            gr.Examples([[e["image"], e["prompt"]] for e in engine.examples], [image, prompt], cache_examples=False,
                        label="Mini-world examples (the scene judge knows their ground truth)")
            inputs = [image, prompt, max_new_tokens, temperature, top_p]
            gr.on([submit.click, prompt.submit], lambda: "", outputs=verdict, queue=False, api_name=False).then(
                ask, inputs, [base, silkie, note], api_name="ask")
            rate.click(judge, [image, prompt, base, silkie], verdict, api_name="judge")

        with gr.Tab("VLFeedback"):
            if browser is None:
                gr.Markdown(missing, elem_id="dataset-missing")
            else:
                browse_tab(demo, browser)
    return demo


def browse_tab(demo: gr.Blocks, browser: Browser) -> None:
    sources, models = browser.choices()
    with gr.Row():
        source = gr.Dropdown([ANY, *sources], value=ANY, label="Source")
        model = gr.Dropdown([ANY, *models], value=ANY, label="Model")
        aspect = gr.Dropdown([ANY, *ASPECTS], value=ANY, label="Aspect")
        low = gr.Slider(1, 5, value=1, step=1, label="Rating from")
        high = gr.Slider(1, 5, value=5, step=1, label="Rating to")
        margin = gr.Slider(0, 4, value=0, step=0.25, label="Pair margin at least")
    found = gr.Markdown()
    matches = gr.State([])
    with gr.Row():
        previous = gr.Button("◀")
        number = gr.Number(1, label="Match", precision=0, minimum=1)
        following = gr.Button("▶")
    with gr.Row():
        picture = gr.Image(label="Image", type="pil", interactive=False, height=280)
        responses = gr.Markdown()

    def pick(source, model, aspect, low, high, margin):
        chosen = [None if value == ANY else value for value in (source, model, aspect)]
        rows = browser.filter(*chosen, low=low, high=high, margin=margin)
        return rows, f"{len(rows)} of {len(browser.rows)} rows match.", 1, *show(rows, 1)

    def show(rows, k):
        if not rows:
            return None, "Nothing matches these filters."
        try:
            return browser.show(rows[min(max(int(k or 1), 1), len(rows)) - 1])
        except Exception as error:  # noqa: BLE001 - a row that cannot be read (a bad image) gets a message
            return None, message(error)

    filters = [source, model, aspect, low, high, margin]
    outputs = [matches, found, number, picture, responses]
    gr.on([demo.load, *(control.change for control in filters)], pick, filters, outputs, api_name="browse")
    number.submit(show, [matches, number], [picture, responses], api_name="show")
    step = {"api_name": False}
    previous.click(lambda k: max(int(k or 1) - 1, 1), number, number, **step).then(
        show, [matches, number], [picture, responses], **step)
    following.click(lambda rows, k: min(int(k or 1) + 1, max(len(rows), 1)), [matches, number], number, **step).then(
        show, [matches, number], [picture, responses], **step)


if __name__ == "__main__":
    space.serve(build())
