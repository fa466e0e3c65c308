"""The zero-shot True/False scorer over a causal (M)LLM: prompt batches in, P(True) / (P(True) +
P(False)) at the next token out. LLaVA-Next models (with their processor) see images; any
causal LM sees text. Knows nothing of runs, M-BEIR files or how prompts are worded."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmembed.rerank.prompts import CHAT_MODES, IMAGE_MARKER, PromptSet, TemplateError, load_prompts


@dataclass
class BatchScores:
    probs: list[float]  # P(yes) / (P(yes) + P(no)) per prompt, in [0, 1]
    mass: list[float]  # P(yes) + P(no) under the full next-token distribution (a prompt check)


def answer_token_id(tokenizer: Any, prompt: str, answer: str) -> int:
    """The first token the model emits for ``answer`` right after ``prompt``.

    A prompt ending in whitespace (a chat turn opener ends in a newline) is followed by the bare
    word; otherwise by a space and the word, as text continues. The id is read off the tokenised
    continuation, so vocabularies where " True" and "True" differ get the right one."""
    sep = "" if (not prompt or prompt[-1].isspace()) else " "
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full = tokenizer(prompt + sep + answer, add_special_tokens=False)["input_ids"]
    if full[: len(head)] != head or len(full) == len(head):
        tail = prompt[-30:]
        raise TemplateError(
            f"the tokenizer merges the end of the prompt ({tail!r}) with the answer {sep + answer!r}, so "
            "the answer's first token is not well defined; end the template with punctuation such "
            "as 'Answer:' or a newline"
        )
    return int(full[len(head)])


class Reranker:
    """A causal (M)LLM asked "does this candidate match this query? True or False".

    ``processor`` (a LLaVA-Next processor) makes it multimodal; without it the model reads text
    only. Padding is on the left with explicit position ids, so a prompt's score does not
    depend on the batch it is in."""

    def __init__(
        self,
        model: Any,
        *,
        tokenizer: Any = None,
        processor: Any = None,
        prompts: PromptSet | None = None,
        chat: str | None = None,
        name: str = "",
    ) -> None:
        if tokenizer is None and processor is None:
            raise ValueError("give a tokenizer (text LM) or a processor (LLaVA-Next)")
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = tokenizer if tokenizer is not None else processor.tokenizer
        self.tokenizer.padding_side = "left"
        if (
            self.tokenizer.pad_token is None
        ):  # many causal LMs ship without one; it is masked anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.prompts = prompts or load_prompts()
        self.chat = (chat or self.prompts.chat).lower()
        if self.chat not in CHAT_MODES:
            raise ValueError(f"chat must be one of {', '.join(CHAT_MODES)}, got {chat!r}")
        self.name = name or type(model).__name__
        self._answer_cache: dict[str, tuple[int, int]] = {}
        template_owner = processor if processor is not None else self.tokenizer
        self._chat_template = getattr(template_owner, "chat_template", None)
        if self.chat == "on" and not self._chat_template:
            raise TemplateError(
                f"chat: on, but {self.name} has no chat template; use chat: auto or off"
            )

    # ------------------------------------------------------------------ properties

    @property
    def multimodal(self) -> bool:
        return self.processor is not None

    @property
    def uses_chat(self) -> bool:
        return self.chat != "off" and bool(self._chat_template)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ text handling

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """``text`` cut to at most ``max_tokens`` tokens, and whether it was cut."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text, False
        return self.tokenizer.decode(ids[:max_tokens], skip_special_tokens=True), True

    def wrap(self, prompt: str) -> str:
        """The final model input string: the chat template around ``prompt`` when used."""
        if not self.uses_chat:
            return prompt
        if self.processor is not None:
            parts: list[dict[str, str]] = []
            for i, piece in enumerate(prompt.split(IMAGE_MARKER)):
                if i:
                    parts.append({"type": "image"})
                if piece:
                    parts.append({"type": "text", "text": piece})
            messages = [{"role": "user", "content": parts}]
            return self.processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )

    def _model_text(self, prompt: str) -> str:
        text = self.wrap(prompt)
        if self.processor is not None and not self.uses_chat:
            image_token = getattr(self.processor, "image_token", IMAGE_MARKER)
            text = text.replace(IMAGE_MARKER, image_token)
        return text

    def answer_ids(self, text: str) -> tuple[int, int]:
        """(yes id, no id) after this final model text; cached by the text's tail."""
        key = text[-64:]
        ids = self._answer_cache.get(key)
        if ids is None:
            yes = answer_token_id(self.tokenizer, text, self.prompts.positive)
            no = answer_token_id(self.tokenizer, text, self.prompts.negative)
            if yes == no:
                raise TemplateError(
                    f"answers {self.prompts.positive!r} and {self.prompts.negative!r} start with the same "
                    "token; choose answers that differ in their first token"
                )
            ids = self._answer_cache[key] = (yes, no)
        return ids

    # ------------------------------------------------------------------ scoring

    def score_batch(
        self, prompts: Sequence[str], images: Sequence[Sequence[Any]] | None = None
    ) -> BatchScores:
        """Score prompts (with ``<image>`` markers) and the RGB images each one shows, in order."""
        import torch

        if not prompts:
            return BatchScores([], [])
        images = [list(im) for im in images] if images is not None else [[] for _ in prompts]
        if len(images) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} image lists")
        for p, im in zip(prompts, images, strict=True):
            if p.count(IMAGE_MARKER) != len(im):
                raise ValueError(
                    f"prompt has {p.count(IMAGE_MARKER)} image markers but {len(im)} images"
                )
        has_images = any(images)
        if has_images and not self.multimodal:
            raise ValueError(
                f"{self.name} reads text only; pairs with images need a LLaVA-Next model"
            )
        texts = [self._model_text(p) for p in prompts]
        answer = [self.answer_ids(t) for t in texts]
        bos = self.tokenizer.bos_token
        add_special = not (bos and texts[0].startswith(bos))
        if self.processor is not None:
            kwargs: dict[str, Any] = {
                "text": texts,
                "padding": True,
                "return_tensors": "pt",
                "add_special_tokens": add_special,
            }
            if has_images:
                if not all(images):
                    raise ValueError("a batch must not mix prompts with and without images")
                kwargs["images"] = images
            enc = self.processor(**kwargs)
        else:
            enc = self.tokenizer(
                texts, padding=True, return_tensors="pt", add_special_tokens=add_special
            )
        enc = {k: v.to(self.device) for k, v in enc.items() if isinstance(v, torch.Tensor)}
        mask = enc["attention_mask"]  # (B, T), zeros on the left
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        with torch.inference_mode():
            try:
                out = self.model(
                    **enc, position_ids=position_ids, logits_to_keep=1, use_cache=False
                )
            except TypeError:  # older or custom heads without logits_to_keep
                out = self.model(**enc, position_ids=position_ids, use_cache=False)
        logits = out.logits[:, -1, :].float()  # (B, V): next-token logits after each prompt
        ids = torch.tensor(answer, device=logits.device)  # (B, 2): yes, no
        pair = logits.gather(1, ids)  # (B, 2)
        probs = torch.softmax(pair, dim=-1)[:, 0]  # (B,)
        mass = (pair - torch.logsumexp(logits, dim=-1, keepdim=True)).exp().sum(-1)  # (B,)
        p = [float(x) for x in probs.cpu()]
        if any(math.isnan(x) for x in p):
            raise FloatingPointError(f"{self.name} produced NaN logits; try --dtype float32")
        return BatchScores(p, [float(x) for x in mass.cpu()])
