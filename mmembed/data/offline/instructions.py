"""The offline benchmark's instruction table: several M-BEIR-style prompts per (dataset, query
modality, candidate modality). Knows nothing of how a model formats them."""

from __future__ import annotations

from mmembed.data.instructions import InstructionRow, InstructionTable
from mmembed.data.offline.tasks import DATASETS

# (dataset, query modality, candidate modality) -> prompts. Each key is one task of the dataset.
PROMPTS: dict[tuple[str, str, str], list[str]] = {
    ("NotoEmoji", "text", "image"): [
        "Find the emoji picture that matches this name.",
        "Retrieve the emoji image described by the given name.",
        "Show me the emoji this name refers to.",
        "Identify the emoji image whose name is given.",
    ],
    ("NotoEmoji", "text", "image,text"): [
        "Find emoji, shown with their names, that are tagged with this keyword.",
        "Retrieve every emoji card annotated with the given keyword.",
        "Which emoji (picture and name) does this keyword describe?",
        "Find emoji whose annotations include this word.",
    ],
    ("NotoEmoji", "image", "text"): [
        "Find the name of this emoji.",
        "Retrieve the English name that describes this emoji image.",
        "What is this emoji called?",
        "Identify the caption that names the emoji in the picture.",
    ],
    ("NotoEmoji", "image,text", "text"): [
        "Find this emoji's name in the language the text asks for.",
        "Retrieve the name of the pictured emoji in the requested language.",
        "Translate the pictured emoji into a name in the given language.",
        "Given an emoji and a language, find what the emoji is called in that language.",
    ],
    ("NotoEmoji", "image,text", "image"): [
        "Find the emoji that results from applying the described change to this one.",
        "Retrieve the emoji image that matches this emoji modified as the text says.",
        "Change this emoji as described and find the resulting emoji.",
        "Keep what the text does not change and find the edited emoji.",
    ],
    ("Gemojione", "image", "image"): [
        "Find the same emoji drawn in a different art style.",
        "Retrieve the image of this emoji in another design.",
        "Which picture shows this emoji in another style?",
        "Find the emoji artwork that depicts the same emoji.",
    ],
    ("Gemojione", "image,text", "image,text"): [
        "Find the card that shows this emoji with its name in the requested language.",
        "Retrieve this emoji's card, drawn in another style, labelled in the given language.",
        "Given an emoji and a language, find its labelled card in that language.",
        "Find the emoji card matching the picture and the requested language.",
    ],
    ("WordNet", "text", "text"): [
        "Find the word or words that this definition defines.",
        "Retrieve the dictionary entry for the given definition.",
        "Which words have this meaning?",
        "Given a gloss, find the lemmas of the sense it describes.",
    ],
}


def instruction_table() -> InstructionTable:
    rows = [
        InstructionRow(qm, cm, name, DATASETS[name], list(prompts))
        for (name, qm, cm), prompts in sorted(
            PROMPTS.items(), key=lambda kv: (DATASETS[kv[0][0]], kv[0][1:])
        )
    ]
    return InstructionTable(rows)
