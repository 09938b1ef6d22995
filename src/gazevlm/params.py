"""Typed view of params.yaml: the one place in the project that reads it.

Every section is a frozen dataclass; unknown keys are an error (a typo in params.yaml must not be
silently ignored) and missing keys take the defaults below, which mirror the committed params.yaml.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")


@dataclass(frozen=True)
class SampleParams:
    root: str = "data/sample"
    seed: int = 0
    videos: int = 12
    seconds: int = 40
    width: int = 256
    height: int = 256
    fps: int = 30
    gaze_hz: int = 200
    objects: int = 6
    cue: float = 1.0


@dataclass(frozen=True)
class DataParams:
    root: str = "data/sample"
    version: str = "v2"


@dataclass(frozen=True)
class ExtractParams:
    keyframe_fps: float = 1.0
    confidence_min: float = 0.6
    saccade_px: float = 40.0
    max_gap_s: float = 0.05
    window_stride_s: float = 1.0
    future_observe_s: float = 5.0
    future_horizon_s: float = 2.0
    activity_observe_s: float = 3.0
    split_seed: int = 0
    split_fractions: dict = field(default_factory=lambda: {"train": 0.6, "val": 0.2, "test": 0.2})
    split_uids: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LLMParams:
    base_url_env: str = "GAZEVLM_LLM_BASE_URL"
    api_key_env: str = "GAZEVLM_LLM_API_KEY"
    model: str = "gpt-4o"
    chunk_size: int = 10
    max_rounds: int = 3
    validation_sequences: int = 4
    feedback_file: str = "annotate/feedback.yaml"
    initial_prompt_file: str = "annotate/prompt0.txt"
    retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 60.0


@dataclass(frozen=True)
class AnnotateParams:
    source: str = "narrations"
    tolerance_s: float = 1.0
    joiner: str = ", then "
    dedupe_consecutive: bool = True
    qc_max_flagged: float = 0.2
    llm: LLMParams = field(default_factory=LLMParams)


@dataclass(frozen=True)
class HeatmapParams:
    sigma_px: float = 20.0
    aggregate: bool = True
    delta_ms: float = 200.0
    occlusion_filter: bool = True
    eps_px: float = 20.0
    eta: float = 0.6
    flow: str = "dis"
    flow_scale: float = 0.5
    target_eps: float = 1e-6
    heatmap_size: int = 64
    shard_max_samples: int = 256
    seed: int = 0
    raft_weights: str | None = None   # local torchvision RAFT checkpoint; None = look in the torch hub cache


@dataclass(frozen=True)
class ModelParams:
    backbone: str = "openflamingo"
    preset: str = "tiny"
    weights_dir: str | None = None
    query: str = "global"
    block_output: str = "pooled"
    block_layers: int = 2
    head_reduce: str = "mean"


@dataclass(frozen=True)
class RunParams:
    """One named run: its switches are the only thing that differs from the other runs."""

    block: bool = False
    # `lambda` is a Python keyword; params.yaml says `lambda`, code says `lam`.
    lam: float = 0.0


@dataclass(frozen=True)
class TrainParams:
    tasks: tuple = ("future", "activity")
    seed: int = 0
    nproc_per_node: int = 1
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 20
    schedule: str = "constant"
    epochs: int = 6
    grad_clip: float = 1.0
    kl_direction: str = "gaze_to_attention"
    kl_reduction: str = "sum"
    kl_eps: float = 1e-8
    freeze_vision: bool = True
    cache_vision_features: bool = True
    num_workers: int = 0
    shuffle_buffer: int = 64
    checkpoint_every_steps: int = 0   # also save a resumable state every N optimizer steps (0: epoch ends only)
    select_on: str = "ce"             # best checkpoint by validation ce | loss (ce + lambda * kl)
    cpu_threads: int = 1              # intra-op threads per process on CPU (0: torch's default)


@dataclass(frozen=True)
class EvaluateParams:
    max_new_tokens: int = 24
    num_beams: int = 1
    bootstrap_samples: int = 1000
    seed: int = 0
    semantic_model: str = "all-MiniLM-L6-v2"
    batch_size: int = 32


@dataclass(frozen=True)
class AttentionParams:
    topk: int = 10
    support_threshold: float = 0.01
    overlay_windows: int = 4


@dataclass(frozen=True)
class Params:
    sample: SampleParams = field(default_factory=SampleParams)
    data: DataParams = field(default_factory=DataParams)
    extract: ExtractParams = field(default_factory=ExtractParams)
    annotate: AnnotateParams = field(default_factory=AnnotateParams)
    heatmaps: HeatmapParams = field(default_factory=HeatmapParams)
    model: ModelParams = field(default_factory=ModelParams)
    runs: dict = field(default_factory=lambda: {
        "base": RunParams(block=False, lam=0.0),
        "lambda0": RunParams(block=True, lam=0.0),
        "gaze": RunParams(block=True, lam=100.0),
    })
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    attention: AttentionParams = field(default_factory=AttentionParams)

    def run(self, name: str) -> RunParams:
        if name not in self.runs:
            raise KeyError(f"params.yaml: no run named {name!r} under `runs` (have {sorted(self.runs)})")
        return self.runs[name]


class ParamsError(ValueError):
    """params.yaml names a key that does not exist or has a value of the wrong shape."""


def _build(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ParamsError(f"params.yaml: unknown key(s) {unknown} in `{where}` (known: {sorted(known)})")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name) if _has_default(known[name]) else None
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            value = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def from_dict(raw: Mapping[str, Any]) -> Params:
    """Build the typed view from an already-parsed mapping (tests use this with overrides)."""
    raw = dict(raw or {})
    runs_raw = raw.pop("runs", None)
    params = _build(Params, raw, "params")
    if runs_raw is not None:
        runs = {}
        for name, switches in runs_raw.items():
            switches = dict(switches or {})
            if "lambda" in switches:
                switches["lam"] = switches.pop("lambda")
            runs[name] = _build(RunParams, switches, f"runs.{name}")
        params = dataclasses.replace(params, runs=runs)
    return params


def load(path: str | Path = "params.yaml") -> Params:
    """Read params.yaml (the only reader of it in the project)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as err:
        raise ParamsError(f"{path}: params file not found") from err
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return from_dict(raw)


def with_overrides(params: Params, **sections: Mapping[str, Any]) -> Params:
    """Return a copy with some keys of some sections replaced, e.g. with_overrides(p, train={"lr": 1e-3})."""
    out = params
    for section, values in sections.items():
        current = getattr(out, section)
        out = dataclasses.replace(out, **{section: dataclasses.replace(current, **values)})
    return out
