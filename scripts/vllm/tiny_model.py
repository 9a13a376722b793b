"""Builds a tiny random-weight Qwen2.5-VL that counts image tokens exactly as
the real one does, for tests against a real `vllm serve` on a CPU.

Usage: tiny_model.py OUT_DIR

The text model is 2 layers of width 128 and the vision tower 4 blocks of
width 64, so the whole model is about 1.7 M parameters. The tokenizer is a
byte-level BPE trained here (no download) plus Qwen's special tokens; the
image processor keeps the real model's limits, so a 1280x720 image is 1,198
prompt tokens, as for Qwen2.5-VL-3B.
"""

import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
)

SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# Qwen2.5-VL's own chat template.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def corpus():
    words = (
        "the a an of to in is it that this what which where when how many image "
        "picture photo frame scene describe color colour red green blue yellow "
        "left right top bottom count object person car tree sky road building "
        "question answer turn conversation you are helpful assistant system user "
        "one two three four five six seven eight nine ten yes no and or not"
    ).split()
    lines = []
    for i in range(4000):
        lines.append(" ".join(words[(i * k + k * k) % len(words)] for k in range(1, 12)))
        lines.append(f"Turn {i}: What changed in image {i % 97}? {i * 7919 % 100003}")
    return lines


def tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096 - len(SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=64,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            rope_scaling={"type": "mrope", "mrope_section": [8, 12, 12]},
            tie_word_embeddings=True,
            torch_dtype="bfloat16",
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=4,
            hidden_size=64,
            intermediate_size=128,
            num_heads=2,
            out_hidden_size=128,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[1, 3],
            in_chans=3,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(out)
    images = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056, patch_size=14,
                                   merge_size=2, temporal_patch_size=2)
    try:
        processor = Qwen2_5_VLProcessor(image_processor=images, tokenizer=tok,
                                        chat_template=CHAT_TEMPLATE)
    except TypeError:
        from transformers import Qwen2VLVideoProcessor
        processor = Qwen2_5_VLProcessor(image_processor=images, tokenizer=tok,
                                        video_processor=Qwen2VLVideoProcessor(),
                                        chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    tok.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    print(f"tiny Qwen2.5-VL: {params / 1e6:.2f} M parameters, vocab {len(tok)}, in {out}")


if __name__ == "__main__":
    main(sys.argv[1])
