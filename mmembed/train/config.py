"""Training configuration: typed dataclasses read from YAML (with ``base:`` inheritance and
dotted ``key=value`` overrides), checked with errors that name the file and the key, and written
back resolved next to every output. Knows nothing about models, data or torch."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmembed.data.atomic import atomic_write_text

STAGES = ("contrastive", "align")


class ConfigError(ValueError):
    """A bad training configuration: names the file (or override) and the key."""


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # Module names (last path component) that get LoRA adapters; Mistral/Llama and BERT names.
    targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value"]
    )


@dataclass
class ModelConfig:
    name: str | None = None  # load_embedder name or local directory (None = project default)
    # dtype the base weights are loaded in: float32, or bfloat16 to halve the memory of a large
    # frozen base under LoRA (the adapters stay float32; accelerate's bf16 autocast runs the math)
    dtype: str = "float32"
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Parameter-name prefixes that are always fully trained (projector and pooler) / frozen.
    train_modules: list[str] = field(default_factory=lambda: ["multi_modal_projector", "pooler"])
    freeze_modules: list[str] = field(default_factory=list)
    freeze_vision: bool = True
    vision_modules: list[str] = field(default_factory=lambda: ["vision_tower"])
    gradient_checkpointing: bool = False
    cache_vision_features: bool = False  # frozen vision tower only: encode each image once
    vision_cache_dtype: str = "float16"  # float16 (half the memory) | float32 (bit-exact reuse)
    # folder of frozen-tower features on disk, shared by every run and command that uses the same
    # tower on the same images (composed backbones; see mmembed.model.feature_cache). None: off
    feature_cache_dir: str | None = None


@dataclass
class SourceConfig:
    name: str = ""
    kind: str = "mbeir"  # mbeir | beir
    root: str = ""  # data root; image paths and relative file names resolve against it
    queries: list[str] = field(default_factory=list)  # mbeir: query files (globs ok)
    pool: list[str] = field(default_factory=list)  # mbeir: candidate pool files
    instructions: str | None = "instructions/query_instructions.tsv"  # mbeir: instruction tsv
    corpus: str = "corpus.jsonl"  # beir
    query_file: str = "queries.jsonl"  # beir
    qrels: str = "qrels/train.tsv"  # beir
    instruction: str | None = None  # beir: one instruction for every query
    weight: float | None = None  # sampling weight; None = number of examples
    in_batch_negatives: bool = True  # off for non-retrieval data (NV-Embed stage 2)
    limit: int | None = None  # keep the first N queries (debugging)


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    batch_size: int = 32  # per process
    hard_negatives: int = 0  # k hard negatives per query, drawn from neg_cand_list
    one_task_per_batch: bool = False
    use_instructions: bool = True
    steps_per_epoch: int | None = None  # None = examples / global batch
    num_workers: int = 0
    strict: bool = False  # stop at the first bad record instead of reporting and skipping


@dataclass
class LossConfig:
    temperature: float = 0.02
    learnable_temperature: bool = False
    grad_cache: bool = False
    chunk_size: int = 32  # GradCache chunk (items per forward)


@dataclass
class OptimConfig:
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    schedule: str = "linear"  # linear | cosine | constant
    max_grad_norm: float | None = 1.0


@dataclass
class TrainConfig:
    output_dir: str = "runs/train"
    # contrastive: LoRA/projector/pooler as model.* says | align: only the projector (and the
    # pooler if model.train_modules names it) learns, the language model frozen (train/align.py)
    stage: str = "contrastive"
    seed: int = 42
    epochs: int = 1
    max_steps: int | None = None
    precision: str = "auto"  # auto (bf16 on a GPU that has it, else fp32) | bf16 | fp16 | no
    deepspeed: str | None = None  # path to a DeepSpeed json (ZeRO-2/3)
    save_every: int = 500
    keep_last: int = 3
    log_every: int = 1
    resume: bool = True  # continue from the newest checkpoint in output_dir
    progress: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML (atomically)."""
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------- parsing


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        last: ConfigError | None = None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except ConfigError as e:
                last = e
        raise last or ConfigError(f"{where}: bad value {value!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            value = [value]  # a single value where a list is expected
        return [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r:.60}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r:.60}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r:.60}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '3e-4' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r:.60}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r:.60}")
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a dict, with ``base: other.yaml`` (relative to this file) merged under it."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values")
    base = data.pop("base", None)
    if base:
        data = _merge(read_yaml(path.parent / base, (*_seen, path)), data)
    return data


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply ``a.b.c=value`` (leading dashes allowed; list items by index: ``data.sources.0.weight=2``).
    The value is parsed as YAML (``8`` -> int, ``[a, b]`` -> list, ``null`` -> None)."""
    text = override.lstrip("-")
    if "=" not in text:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. --data.batch_size=8")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    node: Any = data
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"override {override!r}: {'.'.join(parts[:i])} has no item {part}"
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        else:
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, (dict, list)):
                    raise ConfigError(
                        f"override {override!r}: {'.'.join(parts[: i + 1])} is not a section"
                    )


def load_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Read a YAML config (or start from defaults), apply overrides, and check it."""
    data = read_yaml(path) if path is not None else {}
    for o in overrides:
        apply_override(data, o)
    try:
        cfg = from_dict(TrainConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path or 'config'}: {e}") from None
    check(cfg, str(path or "config"))
    return cfg


def check(cfg: TrainConfig, where: str) -> None:
    """Cross-field checks with the fix in the message."""
    if cfg.precision not in ("auto", "bf16", "fp16", "no"):
        raise ConfigError(
            f"{where}: precision must be auto, bf16, fp16 or no, got {cfg.precision!r}"
        )
    if cfg.stage not in STAGES:
        raise ConfigError(f"{where}: stage must be one of {list(STAGES)}, got {cfg.stage!r}")
    if cfg.optim.schedule not in ("linear", "cosine", "constant"):
        raise ConfigError(f"{where}: optim.schedule must be linear, cosine or constant")
    if cfg.data.batch_size < 1:
        raise ConfigError(f"{where}: data.batch_size must be >= 1")
    if not cfg.data.sources:
        raise ConfigError(f"{where}: data.sources is empty; add at least one training source")
    names = [s.name for s in cfg.data.sources]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"{where}: every data source needs a unique name, got {names}")
    for s in cfg.data.sources:
        if s.kind not in ("mbeir", "beir"):
            raise ConfigError(
                f"{where}: source {s.name!r}: kind must be mbeir or beir, got {s.kind!r}"
            )
        if s.kind == "mbeir" and not s.queries:
            raise ConfigError(f"{where}: source {s.name!r}: list its query files under 'queries'")
        if s.weight is not None and s.weight <= 0:
            raise ConfigError(f"{where}: source {s.name!r}: weight must be > 0")
    if cfg.model.dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"{where}: model.dtype must be float32, bfloat16 or float16")
    if cfg.model.vision_cache_dtype not in ("float16", "float32", "bfloat16"):
        raise ConfigError(f"{where}: model.vision_cache_dtype must be float16, bfloat16 or float32")
    if cfg.loss.temperature <= 0:
        raise ConfigError(f"{where}: loss.temperature must be > 0")
