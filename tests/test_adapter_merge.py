"""The adapter merge (mmembed/model/adapter_merge.py) against PEFT's own merge_and_unload, for
LoRA and DoRA, from an adapter folder saved by PEFT; and the "joined" prompt layout (VLM2Vec)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mmembed.model.adapter_merge import merge_adapter, read_adapter
from mmembed.model.prompts import PromptConfig, format_prompt


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(8, 6)
        self.down_proj = nn.Linear(6, 8, bias=False)
        self.other = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.other(self.down_proj(self.q_proj(x)))


@pytest.mark.parametrize("dora", [False, True])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_merge_equals_peft_merge_and_unload(tmp_path, dora, fmt):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = Tiny()
    ours = Tiny()
    ours.load_state_dict(base.state_dict())
    cfg = peft.LoraConfig(
        r=2, lora_alpha=5, target_modules=["q_proj", "down_proj"], use_dora=dora, lora_dropout=0.0
    )
    model = peft.get_peft_model(base, cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
            elif "lora_magnitude_vector" in n:
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    model.save_pretrained(tmp_path, safe_serialization=fmt == "safetensors")
    want = model.merge_and_unload()

    merged = merge_adapter(ours, tmp_path, lambda name: name)
    assert sorted(merged) == ["down_proj.weight", "q_proj.weight"]
    for name, p in ours.state_dict().items():
        assert torch.allclose(p, want.state_dict()[name], atol=1e-6), name
    x = torch.randn(3, 8)
    assert torch.allclose(ours(x), want(x), atol=1e-5)
    # and the merge changed the weights (the comparison can fail)
    assert not torch.allclose(ours.q_proj.weight, Tiny().q_proj.weight)


def test_use_dora_must_match_the_saved_tensors(tmp_path):
    """A config that says plain LoRA over saved DoRA magnitudes is refused, not half-merged."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = peft.get_peft_model(
        Tiny(), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], use_dora=True)
    )
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    cfg["use_dora"] = False
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="use_dora"):
        read_adapter(tmp_path)


def test_adapter_for_another_model_is_named(tmp_path):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(Tiny(), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="q_proj"):
        merge_adapter(Tiny(), tmp_path, lambda name: "language_model." + name)


def test_joined_layout_places_the_instruction_after_the_image():
    cfg = PromptConfig(
        layout="joined",
        instruction_prefix="{instruction}",
        query_prefix="",
        image_text="<|image_pad|>",
        image_token="<|image_pad|>",
        append_eos=False,
        exclude_instruction=False,
    )
    q = "Represent the given image with the following question:"
    assert format_prompt("What is it", True, instruction=q, cfg=cfg) == (
        "<|image_pad|> Represent the given image with the following question: What is it",
        0,
    )
    assert format_prompt(None, True, instruction="Find a similar image.", cfg=cfg)[0] == (
        "<|image_pad|> Find a similar image."
    )
    assert format_prompt("a dog", False, cfg=cfg)[0] == "a dog"
    assert format_prompt(None, True, is_query=False, cfg=cfg)[0] == "<|image_pad|>"
    assert format_prompt("a dog", False, instruction="  ", cfg=cfg)[0] == "a dog"
