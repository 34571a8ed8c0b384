"""Tiny real vision-language models for the mini world: a Qwen2-VL and a LLaVA, built from configs
with random init and a byte-level BPE vocabulary trained here, so nothing is downloaded.

They are the real transformers classes, so every stage that runs on them (generation, DPO with
TRL/PEFT, evaluation, save/load with the Auto classes) runs unchanged on full-size models.
This is the one place that knows architecture-specific details (special tokens, chat templates,
image-token arithmetic).
"""

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from silkie.world.scenes import IMAGE_SIZE

VOCAB_SIZE = 400  # 256 byte alphabet + specials + ~130 merges: enough for the world's small vocabulary
LLAVA_PATCH = 20  # 140 px / 20 = 7x7 = 49 image tokens: fine enough to see shapes, short enough to be fast

# Qwen's own template minus the default system prompt (every token costs a tiny model time).
# Roles sit on their own line so the answer starts a fresh pre-token: TRL tokenizes prompt and
# completion separately, and generation must see the same split.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-1.5's "USER: <image>\n... ASSISTANT: ...</s>" format; the answer ends with </s> so DPO and
# SFT teach the model to stop. (transformers renders with trim_blocks: no bare newline after a tag.)
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% elif message['role'] == 'assistant' %} ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% elif message['role'] == 'system' %} {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


def build_tokenizer(texts, vocab_size=VOCAB_SIZE, special_tokens=(), **named_tokens):
    """Byte-level BPE trained on `texts`: any string encodes (no unknown tokens) even when the
    corpus is small. `named_tokens` (eos_token="...", pad_token="...") must be in special_tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # Left padding by default: batched generation appends to the right end of every row.
    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", **named_tokens)


def _stop_and_pad(tokenizer):
    # The checkpoint must say how to stop and pad, or generate() warns and guesses; no BOS, as in Qwen.
    return dict(bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def build_qwen2_vl(texts, seed=0):
    # Pad is not id 0: `tokenizer.pad_token_id or eos_id` is a common idiom (TRL's collators use it).
    specials = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>")
    # The role words appear in every conversation: give them the frequency to become single tokens.
    texts = list(texts)
    corpus = texts + ["user", "assistant"] * len(texts)
    tokenizer = build_tokenizer(corpus, special_tokens=specials, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = tokenizer.convert_tokens_to_ids
    text = dict(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
        # M-RoPE splits each head's rotary half (head_dim/2 = 16) into temporal/height/width parts.
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        **_stop_and_pad(tokenizer),
    )
    # The merger projects 2x2 merged patches straight into the text stream: hidden_size = text hidden.
    vision = dict(depth=2, embed_dim=64, hidden_size=128, num_heads=4, mlp_ratio=4, in_channels=3,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=False,
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    # min = max pixels pins every image to 140x140 -> (140/14)^2 patches / 2x2 merge = 25 tokens.
    pixels = dict(min_pixels=IMAGE_SIZE * IMAGE_SIZE, max_pixels=IMAGE_SIZE * IMAGE_SIZE,
                  patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        video_processor=Qwen2VLVideoProcessor(**pixels),  # required by the processor, unused here
        tokenizer=tokenizer,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    return model, processor


def build_llava(texts, seed=0):
    specials = ("<s>", "</s>", "<pad>", "<image>")  # <s> only keeps pad off id 0 (see build_qwen2_vl)
    texts = list(texts)
    corpus = texts + ["USER:", " ASSISTANT:"] * len(texts)  # role words: see build_qwen2_vl
    tokenizer = build_tokenizer(corpus, special_tokens=specials, eos_token="</s>", pad_token="<pad>")
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=LLAVA_PATCH, projection_dim=64,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
        tie_word_embeddings=False, **_stop_and_pad(tokenizer),
    )
    # "default" drops CLIP's CLS token, so the image is exactly (140/20)^2 = 49 tokens;
    # layer -1 because a 2-layer tower has no useful penultimate layer to spare.
    n_image_tokens = (IMAGE_SIZE // LLAVA_PATCH) ** 2
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=n_image_tokens, vision_feature_select_strategy="default", vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    image_processor = CLIPImageProcessor(size=size, crop_size=size, do_center_crop=False)
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=LLAVA_PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        image_token="<image>", chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor


BUILDERS = {"tiny-qwen2-vl": build_qwen2_vl, "tiny-llava": build_llava}


def save_tiny_models(out_dir, texts, seed=0):
    """Write each tiny model with its processor; reload with AutoModelForImageTextToText /
    AutoProcessor.from_pretrained(path)."""
    texts, paths = list(texts), {}
    for name, build in BUILDERS.items():
        model, processor = build(texts, seed=seed)
        paths[name] = Path(out_dir) / name
        model.save_pretrained(paths[name])
        processor.save_pretrained(paths[name])
    return paths
