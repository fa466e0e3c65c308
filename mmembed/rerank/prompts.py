"""Reranking prompt templates per M-BEIR task type, loaded from YAML (package copy by default),
and rendering of one (query, candidate) pair into a prompt with image markers.
Knows nothing of models or tokenizers: the image marker is swapped for a model's token later."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

IMAGE_MARKER = "<image>"  # placeholder in rendered prompts; the scorer maps it to the model's token
PACKAGE_FILE = "mbeir_prompts.yaml"
CHAT_MODES = ("auto", "on", "off")


class TemplateError(ValueError):
    """A template file that cannot be used: names the file, the task and what to fix."""


@dataclass(frozen=True)
class TaskPrompt:
    task_id: int
    name: str
    instruction: str
    template: str

    def render(self, instruction: str | None, query: str, candidate: str) -> str:
        """The prompt text, trailing whitespace removed (the answer follows it directly)."""
        text = self.template.format(
            instruction=(instruction or self.instruction).strip(), query=query, candidate=candidate
        )
        return text.rstrip()


@dataclass(frozen=True)
class PromptSet:
    """All task prompts of one file plus the two answers and the chat mode."""

    tasks: dict[int, TaskPrompt]
    positive: str = "True"
    negative: str = "False"
    chat: str = "auto"
    source: str = "<memory>"
    extra: dict[str, Any] = field(default_factory=dict)

    def for_task(self, task_id: int) -> TaskPrompt:
        try:
            return self.tasks[int(task_id)]
        except KeyError:
            raise TemplateError(
                f"{self.source}: no reranking template for task {task_id}; "
                f"templates exist for tasks {sorted(self.tasks)} (add one under 'tasks:')"
            ) from None


def format_item(text: str | None, has_image: bool) -> str:
    """An item as it appears in a prompt: ``<image>\\n{text}``, ``<image>`` or ``{text}``."""
    text = (text or "").strip()
    if has_image:
        return f"{IMAGE_MARKER}\n{text}" if text else IMAGE_MARKER
    return text


def load_prompts(path: str | Path | None = None) -> PromptSet:
    """Read a template file (YAML); ``None`` = the packaged M-BEIR templates."""
    import yaml

    if path is None:
        source = f"mmembed/rerank/{PACKAGE_FILE}"
        raw = resources.files("mmembed.rerank").joinpath(PACKAGE_FILE).read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise TemplateError(f"{path}: cannot read template file ({e.strerror})") from None
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise TemplateError(f"{source}: not valid YAML ({e})") from None
    return parse_prompts(doc, source)


def parse_prompts(doc: Any, source: str = "<memory>") -> PromptSet:
    """Check and build a PromptSet from a parsed YAML document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict) or not doc["tasks"]:
        raise TemplateError(f"{source}: expected a mapping with a non-empty 'tasks:' section")
    answers = doc.get("answers") or {}
    positive = str(answers.get("positive", "True")).strip()
    negative = str(answers.get("negative", "False")).strip()
    if not positive or not negative or positive == negative:
        raise TemplateError(
            f"{source}: answers.positive and answers.negative must be two different words"
        )
    chat = str(doc.get("chat", "auto")).lower()
    if chat not in CHAT_MODES:
        raise TemplateError(f"{source}: chat must be one of {CHAT_MODES}, got {chat!r}")
    tasks: dict[int, TaskPrompt] = {}
    for key, spec in doc["tasks"].items():
        where = f"{source}: tasks.{key}"
        try:
            task_id = int(key)
        except (TypeError, ValueError):
            raise TemplateError(f"{where}: task keys are M-BEIR task ids (0-8)") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("template"), str):
            raise TemplateError(f"{where}: needs a 'template' string")
        template = spec["template"]
        for slot in ("{query}", "{candidate}"):
            if slot not in template:
                raise TemplateError(f"{where}: template lacks the {slot} placeholder")
        try:  # unknown placeholders or stray braces fail here, not in the middle of a run
            template.format(instruction="", query="", candidate="")
        except (KeyError, IndexError, ValueError) as e:
            raise TemplateError(
                f"{where}: bad placeholder {e}; use {{instruction}}, {{query}}, {{candidate}} "
                "and double any literal braces"
            ) from None
        tasks[task_id] = TaskPrompt(
            task_id=task_id,
            name=str(spec.get("name", f"task {task_id}")),
            instruction=str(spec.get("instruction", "")),
            template=template,
        )
    extra = {k: v for k, v in doc.items() if k not in ("tasks", "answers", "chat", "version")}
    return PromptSet(tasks, positive, negative, chat, source, extra)
