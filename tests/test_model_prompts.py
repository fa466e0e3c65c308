"""Prompt strings: candidate instructions per candidate modality and the "joined" layout's
image separator and instruction suffix (docs/models.md). Strings only, no model."""

from __future__ import annotations

import pytest

from mmembed.model.prompts import PromptConfig, format_prompt, item_modality

# VLM2Vec's MMEB strings: "<|image_pad|>\nInstruction: text\n"
MMEB = PromptConfig(
    layout="joined",
    join_sep=" ",
    image_sep="\n",
    instruction_suffix="\n",
    candidate_instructions={
        "image": "Represent the given image.",
        "image,text": "Represent the given Wikipedia image with related text information:",
    },
    instruction_prefix="{instruction}",
    query_prefix="",
    image_text="<|image_pad|>",
    image_token="<|image_pad|>",
    append_eos=False,
    exclude_instruction=False,
)


@pytest.mark.parametrize(
    ("text", "has_image", "want"),
    [("a dog", False, "text"), (None, True, "image"), ("  ", True, "image"),
     ("a dog", True, "image,text"), ("", False, "text")],
)  # fmt: skip
def test_item_modality_uses_mbeir_names(text, has_image, want):
    assert item_modality(text, has_image) == want


def test_candidates_get_the_instruction_of_their_modality():
    assert format_prompt(None, True, is_query=False, cfg=MMEB) == (
        "<|image_pad|>\nRepresent the given image.\n",
        0,
    )
    assert format_prompt("Titisee. A lake.", True, is_query=False, cfg=MMEB)[0] == (
        "<|image_pad|>\nRepresent the given Wikipedia image with related text information: "
        "Titisee. A lake.\n"
    )
    # no "text" entry: a text candidate is its text, no suffix
    assert format_prompt("a red apple", False, is_query=False, cfg=MMEB) == ("a red apple", 0)


def test_queries_in_the_mmeb_strings():
    ins = "Find me an everyday image that matches the given caption:"
    assert format_prompt("two dogs", False, instruction=ins, cfg=MMEB)[0] == f"{ins} two dogs\n"
    ins = "Find a day-to-day image that looks similar to the provided image."
    assert format_prompt(None, True, instruction=ins, cfg=MMEB)[0] == f"<|image_pad|>\n{ins}\n"
    ins = "Given an image, find a similar everyday image with the described changes:"
    assert format_prompt("is it red", True, instruction=ins, cfg=MMEB)[0] == (
        f"<|image_pad|>\n{ins} is it red\n"
    )
    # without an instruction: no suffix; the image separator still applies
    assert format_prompt("two dogs", False, cfg=MMEB)[0] == "two dogs"
    assert format_prompt("two dogs", True, cfg=MMEB)[0] == "<|image_pad|>\ntwo dogs"


def test_a_candidate_instruction_is_never_a_query_instruction():
    """Queries ignore candidate_instructions; candidates ignore an instruction passed in."""
    assert format_prompt(None, True, cfg=MMEB)[0] == "<|image_pad|>"
    assert format_prompt("a dog", False, instruction="Find it:", is_query=False, cfg=MMEB)[0] == (
        "a dog"
    )


def test_blank_candidate_instruction_is_none():
    cfg = PromptConfig(
        layout="joined", image_text="<i>", instruction_prefix="{instruction}",
        candidate_instructions={"image": "  ", "text": "Represent the text:"},
    )  # fmt: skip
    assert format_prompt(None, True, is_query=False, cfg=cfg)[0] == "<i>"
    assert format_prompt("abc", False, is_query=False, cfg=cfg)[0] == "Represent the text: abc"


def test_prefix_layout_places_a_candidate_instruction_as_a_query_one():
    """MM-Embed's layout: the candidate instruction goes where a query's does and, with
    exclude_instruction, leaves pooling the same way."""
    cfg = PromptConfig(candidate_instructions={"image": "Represent the image."})
    prefix = "Instruct: Represent the image.\nQuery: "
    assert format_prompt(None, True, is_query=False, cfg=cfg) == (prefix + "<image>\n", len(prefix))
    assert format_prompt("dog", False, is_query=False, cfg=cfg) == ("dog", 0)


def test_defaults_leave_candidates_and_the_joined_layout_as_before():
    assert PromptConfig().candidate_instructions == {}
    assert format_prompt(None, True, is_query=False) == ("<image>\n", 0)
    assert format_prompt("dog", True, is_query=False) == ("<image>\ndog", 0)
    joined = PromptConfig(layout="joined", image_text="<i>", instruction_prefix="{instruction}")
    assert format_prompt("dog", True, instruction="Find:", cfg=joined)[0] == "<i> Find: dog"
    assert format_prompt(None, True, is_query=False, cfg=joined)[0] == "<i>"
    assert "candidate_instructions" in PromptConfig().to_dict()
