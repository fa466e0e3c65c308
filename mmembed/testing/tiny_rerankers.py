"""Tiny random rerankers built in memory in about a second, for tests and demos: a byte-level
BPE tokenizer trained on a few sentences, a LLaVA-Next generation model (tiny CLIP vision tower
+ tiny Llama) with its processor, and a tiny Llama text LM. Random weights: no real judgement."""

from __future__ import annotations

from typing import Any

from mmembed.rerank.prompts import IMAGE_MARKER, PromptSet
from mmembed.rerank.scorer import Reranker

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", IMAGE_MARKER]
_CORPUS = [
    "Instruct: Retrieve an image that matches the given text.",
    "Query: a red cat on the mat. Candidate image: Candidate text: Candidate (image and text):",
    "Does the candidate image match the query text? Answer True or False. Answer: True",
    "Is the candidate the query image changed as the query text says? Answer: False",
    "True\nFalse\nTrue\nFalse\nTrue False True. False. yes no the a of and with in to describe show same thing passage",
    "dog bird fish tree house car blue green yellow smiling face heart star moon sun",
    "Retrieve a text that describes the given image. Retrieve a passage that answers it.",
]


def tiny_tokenizer(vocab_size: int = 320) -> Any:
    """A byte-level BPE tokenizer (GPT-2 style: " True" and "True" are different tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": IMAGE_MARKER},
    )


def _text_config(tok: Any, seed: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def tiny_text_reranker(seed: int = 0, prompts: PromptSet | None = None) -> Reranker:
    """A random 2-layer LlamaForCausalLM (hidden 32) with the tiny tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_text_config(tok, seed)).eval()
    return Reranker(model, tokenizer=tok, prompts=prompts, name="tiny-llama")


def tiny_llava_parts(seed: int = 0, image_size: int = 28) -> tuple[Any, Any]:
    """(LlavaNextForConditionalGeneration, LlavaNextProcessor), both tiny and random."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tok = tiny_tokenizer()
    pinpoints = [
        [image_size, image_size],
        [image_size, 2 * image_size],
        [2 * image_size, image_size],
    ]
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=14,
        projection_dim=32,
    )
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=_text_config(tok, seed),
        image_token_index=tok.convert_tokens_to_ids(IMAGE_MARKER),
        image_grid_pinpoints=pinpoints,
        image_seq_length=(image_size // 14) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return model, processor


def tiny_llava_reranker(seed: int = 0, prompts: PromptSet | None = None) -> Reranker:
    """A random LLaVA-Next reranker (CLIP vision 2x32, Llama 2x32, 28-pixel tiles)."""
    model, processor = tiny_llava_parts(seed)
    return Reranker(model, processor=processor, prompts=prompts, name="tiny-llava-next")
