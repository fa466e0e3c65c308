"""MM-Embed prompt formatting. Knows strings only: no tokeniser, no model (the character span of
the instruction is returned so the collator can mask its tokens out of pooling). Which
instruction a query gets is ``mmembed.data.instructions.query_instruction``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mmembed.data.records import Modality

IMAGE_TOKEN = "<image>"


@dataclass
class PromptConfig:
    """How items become prompts (the defaults are MM-Embed's; docs/models.md)."""

    instruction_prefix: str = "Instruct: {instruction}\nQuery: "  # masked out of pooling
    query_prefix: str = "Query: "  # used when a query has no instruction (kept in pooling)
    candidate_prefix: str = ""
    image_text: str = IMAGE_TOKEN + "\n"  # dropped when the item has no image
    max_length: int = 512
    append_eos: bool = True  # append the tokeniser's EOS if it did not end the sequence
    padding_side: str = "right"
    exclude_instruction: bool = True
    # "tokens": leave out of pooling the tokens that cover the instruction prefix's characters;
    # "reference": MM-Embed's rule, len(tokenizer(text before "\nQuery: ")) leading positions
    # (mmembed_release.reference_pool_skip), for checkpoints loaded from the release layout.
    instruction_mask: str = "tokens"
    strip_instruction: bool = True  # False: the instruction verbatim, and "" still adds the prefix
    image_token: str = IMAGE_TOKEN  # the token in image_text that expands to visual tokens
    suffix: str = ""  # appended after the text (chat templates: end of turn, assistant header)
    # Make an instruction end in punctuation: "" (as given), "dot" (append "." unless it ends
    # with "."), "punct" (append "." unless it ends with any Unicode punctuation).
    instruction_end: str = ""
    # "prefix": instruction_prefix, then the image, then the text (MM-Embed, chat turns).
    # "joined": the image text, the formatted instruction and the text, each only when present,
    # joined by ``join_sep`` (VLM2Vec's "<|image_pad|> Instruction: text"; docs/models.md).
    layout: str = "prefix"
    join_sep: str = " "
    # "joined" only: the separator after the image text (None: ``join_sep``), and what ends an
    # item that carries an instruction, a query's or a candidate's (VLM2Vec's MMEB strings are
    # "<|image_pad|>\nInstruction: text\n"; docs/models.md).
    image_sep: str | None = None
    instruction_suffix: str = ""
    # Candidate instructions by the candidate's modality, M-BEIR's names "text", "image" and
    # "image,text" (a modality not listed gets none). A candidate with one is formatted as a
    # query with that instruction (VLM2Vec's "Represent the given image."; docs/models.md).
    candidate_instructions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_prompt(
    text: str | None,
    has_image: bool,
    *,
    instruction: str | None = None,
    is_query: bool = True,
    cfg: PromptConfig | None = None,
) -> tuple[str, int]:
    """The prompt string and the number of leading characters that belong to the instruction
    (0 when there is none, or when ``cfg.exclude_instruction`` is off).

    >>> format_prompt("a dog", True, instruction="Find an image.")
    ('Instruct: Find an image.\\nQuery: <image>\\na dog', 33)
    >>> format_prompt("a dog", False, is_query=False)
    ('a dog', 0)
    """
    cfg = cfg or PromptConfig()
    if not is_query:
        cand_ins = candidate_instruction(text, has_image, cfg)
        if cand_ins is not None:
            instruction, is_query = cand_ins, True
    if cfg.layout == "joined":
        return _joined_prompt(text, has_image, instruction, is_query, cfg), 0
    if cfg.layout != "prefix":
        raise ValueError(f"unknown prompt layout {cfg.layout!r}; expected 'prefix' or 'joined'")
    body = (cfg.image_text if has_image else "") + (text or "") + cfg.suffix
    if not is_query:
        return cfg.candidate_prefix + body, 0
    present = bool(instruction) if cfg.strip_instruction else instruction is not None
    if present:
        text_ins = instruction.strip() if cfg.strip_instruction else instruction
        prefix = cfg.instruction_prefix.format(
            instruction=end_instruction(text_ins, cfg.instruction_end)
        )
        return prefix + body, (len(prefix) if cfg.exclude_instruction else 0)
    return cfg.query_prefix + body, 0


def item_modality(text: str | None, has_image: bool) -> str:
    """M-BEIR's name of an item's modality: "text", "image" or "image,text" (``Modality.of``;
    blank text counts as none, and an item with neither is "text")."""
    if not has_image:
        return Modality.TEXT.value
    return Modality.of(text if text and text.strip() else None, True).value


def candidate_instruction(text: str | None, has_image: bool, cfg: PromptConfig) -> str | None:
    """The instruction ``cfg.candidate_instructions`` gives a candidate, or None."""
    ins = cfg.candidate_instructions.get(item_modality(text, has_image))
    return ins if ins and ins.strip() else None


def _joined_prompt(
    text: str | None, has_image: bool, instruction: str | None, is_query: bool, cfg: PromptConfig
) -> str:
    """The "joined" layout: [image text] [instruction] [text], the parts present joined by
    ``cfg.join_sep`` (``cfg.image_sep`` after the image text when set); an item with an
    instruction ends with ``cfg.instruction_suffix``, one without gets the candidate/query
    prefix in front. The instruction never leaves pooling (no chat turn to mask)."""
    parts, end = [], ""
    if is_query and instruction and instruction.strip():
        ins = end_instruction(instruction.strip(), cfg.instruction_end)
        parts.append(cfg.instruction_prefix.format(instruction=ins))
        prefix, end = "", cfg.instruction_suffix
    else:
        prefix = cfg.query_prefix if is_query else cfg.candidate_prefix
    if text:
        parts.append(text)
    body = cfg.join_sep.join(parts)
    if has_image:
        sep = cfg.join_sep if cfg.image_sep is None else cfg.image_sep
        body = cfg.image_text + (sep + body if body else "")
    return prefix + body + end + cfg.suffix


def end_instruction(instruction: str, rule: str) -> str:
    """Apply ``PromptConfig.instruction_end`` to an instruction."""
    import unicodedata

    if not instruction or rule == "":
        return instruction
    if rule == "dot":
        return instruction if instruction.endswith(".") else instruction + "."
    if rule == "punct":
        last = unicodedata.category(instruction[-1])
        return instruction if last.startswith("P") else instruction + "."
    raise ValueError(f"unknown instruction_end {rule!r}; expected '', 'dot' or 'punct'")
