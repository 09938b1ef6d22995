"""Typed view of params.yaml: the one place in the project that reads it.

Every section is a frozen dataclass; unknown keys are an error (a typo in params.yaml must not be
silently ignored) and missing keys take the defaults below, which mirror the committed params.yaml.
Every value is checked here, once, when the file is read: its type from the dataclass annotation
(numeric strings such as `7e-05`, which `dvc exp run -S train.lr=7e-5` writes and YAML 1.1 reads as
a string, become numbers), its range or choice from RULES. A bad value fails in the notebook's first
cell with the key, the value and what is allowed, not deep inside a stage.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


@dataclass(frozen=True)
class SampleParams:
    root: str = "data/sample"
    seed: int = 0
    videos: int = 180
    seconds: int = 16
    width: int = 256
    height: int = 256
    fps: int = 30
    gaze_hz: int = 200
    objects: int = 6
    cue: float = 1.0


@dataclass(frozen=True)
class DataParams:
    root: str = "data/sample"
    version: str = "v2"  # ego4d format: the version folder under root
    format: str = "ego4d"  # the layout of root: ego4d (gazevlm.ego4d) | egtea (gazevlm.egtea)
    egtea_split: int = 1  # egtea format: {train,test}_split<k>.txt assign the sessions


@dataclass(frozen=True)
class EgteaSampleParams:
    """The synthetic world written in the EGTEA Gaze+ layout (gazevlm.sample_egtea), for Table 4."""

    root: str = "data/egtea_sample"
    seed: int = 17
    videos: int = 12
    seconds: int = 16
    width: int = 320
    height: int = 240
    gaze_hz: int = 30
    objects: int = 6
    cue: float = 1.0
    test_fraction: float = 0.67


@dataclass(frozen=True)
class ZeroshotParams:
    """Table 4: the default models evaluated, untrained on it, on an EGTEA-layout root (gazevlm.zeroshot)."""

    root: str = "data/egtea_sample"
    workdir: str = "data/zeroshot/egtea"


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
    # future-task targets: the target keyframes' captions (fine) | the video's narrations within the
    # horizon (coarse, Table 20); activity targets are always the observed keyframes' captions
    future_targets: str = "captions"
    llm: LLMParams = field(default_factory=LLMParams)


@dataclass(frozen=True)
class HeatmapParams:
    sigma_px: float = 20.0
    aggregate: bool = True
    delta_ms: float = 200.0
    occlusion_filter: bool = True
    eps_px: float = 20.0
    # sigma_px and eps_px are pixels of a frame this wide (Ego4D's gaze videos, where the paper set 20 px);
    # a video of another width scales them by its width / reference_width
    reference_width: float = 1088.0
    eta: float = 0.6
    flow: str = "dis"
    flow_scale: float = 0.5
    target_eps: float = 1e-6
    heatmap_size: int = 64
    shard_max_samples: int = 256
    seed: int = 0
    raft_weights: str | None = None  # local torchvision RAFT checkpoint; None = look in the torch hub cache


@dataclass(frozen=True)
class ModelParams:
    backbone: str = "openflamingo"
    preset: str = "tiny"
    weights_dir: str | None = None
    vision_weights: str | None = "models/encoder/vision.safetensors"  # tiny preset: the pretrain stage's encoder
    query: str = "global"
    block_output: str = "pooled"
    block_layers: int = 2
    block_patch_layers: int | None = None  # trainable layers over the patches first in the block; None: the preset's
    head_reduce: str = "mean"


@dataclass(frozen=True)
class RunParams:
    """One named run: its switches are the only thing that differs from the other runs.

    `gaze_text` and `gaze_overlay` are the paper's gaze-as-input baselines (Tables 13 and 15): the
    only runs in which gaze reaches the model, as prompt text or painted into the frames, at training
    and at test time (gazevlm.gaze_inputs). Both are off unless a run names them."""

    block: bool = False
    # `lambda` is a Python keyword; params.yaml says `lambda`, code says `lam`.
    lam: float = 0.0
    gaze_text: bool = False  # each observed frame's gaze point as text coordinates in the prompt
    gaze_overlay: bool = False  # each observed frame with its gaze heatmap painted over it

    @property
    def gaze_inputs(self) -> tuple[str, ...]:
        """The switches through which this run takes gaze as an input (empty for every other run)."""
        return tuple(name for name in GAZE_INPUTS if getattr(self, name))


@dataclass(frozen=True)
class TrainParams:
    tasks: tuple = ("future", "activity")
    seeds: tuple = (0, 1, 2)  # every run is trained once per seed (one DVC stage each)
    nproc_per_node: int = 1
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    schedule: str = "constant"
    epochs: int = 20
    grad_clip: float = 1.0
    kl_direction: str = "gaze_to_attention"
    kl_reduction: str = "mean"
    kl_eps: float = 1e-8
    freeze_vision: bool = True
    cache_vision_features: bool = True
    num_workers: int = 0
    shuffle_buffer: int = 64
    checkpoint_every_steps: int = 0  # also save a resumable state every N optimizer steps (0: epoch ends only)
    select_on: str = "ce"  # best checkpoint by validation ce | loss (ce + lambda * kl) | last epoch
    validate_every: int = 1  # validation after every Nth epoch and the last (the best is chosen among those)
    cpu_threads: int = 1  # intra-op threads per process on CPU (0: torch's default)
    parallel_tasks: int = 2  # the train stage runs this many tasks' trainings at once
    in_memory: bool = True  # one process: decode the shards once into memory (tiny data only)


@dataclass(frozen=True)
class PretrainParams:
    """The tiny preset's vision encoder, pretrained on the train videos before it is frozen."""

    enabled: bool = True
    steps: int = 400
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class EvaluateParams:
    max_new_tokens: int = 24
    num_beams: int = 1
    bootstrap_samples: int = 1000
    seed: int = 0
    semantic_model: str = "all-MiniLM-L6-v2"
    batch_size: int = 32
    workers: int = 2  # processes generating the test predictions (the outputs are the same for any number)


@dataclass(frozen=True)
class AttentionParams:
    seed: int | None = None  # which trained seed to analyse (None: the first of train.seeds)
    topk: int = 10
    support_threshold: float = 0.01
    overlay_windows: int = 4


@dataclass(frozen=True)
class HallucinationParams:
    """The human hallucination study: which predictions a reviewer rates blind, and where ratings go."""

    task: str = "future"
    runs: tuple = ("base", "gaze")  # every later run is compared with the first
    seed: int | None = None  # training seed whose predictions are rated (None: the first of train.seeds)
    # a task, run or seed the pipeline did not evaluate is no error here (an experiment may drop it):
    # the stage then reports the study as not applicable, and the rating notebook says why
    windows: int = 200  # test windows drawn for rating (the paper's 200 samples)
    sample_seed: int = 0  # draws the windows and shuffles the blinded order
    ratings_file: str = "ratings/hallucination.csv"  # append-only, committed: the stage's input


@dataclass(frozen=True)
class Params:
    sample: SampleParams = field(default_factory=SampleParams)
    data: DataParams = field(default_factory=DataParams)
    sample_egtea: EgteaSampleParams = field(default_factory=EgteaSampleParams)
    zeroshot: ZeroshotParams = field(default_factory=ZeroshotParams)
    extract: ExtractParams = field(default_factory=ExtractParams)
    annotate: AnnotateParams = field(default_factory=AnnotateParams)
    heatmaps: HeatmapParams = field(default_factory=HeatmapParams)
    model: ModelParams = field(default_factory=ModelParams)
    pretrain: PretrainParams = field(default_factory=PretrainParams)
    runs: dict = field(
        default_factory=lambda: {
            "base": RunParams(block=False, lam=0.0),
            "lambda0": RunParams(block=True, lam=0.0),
            "gaze": RunParams(block=True, lam=100.0),
        }
    )
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    attention: AttentionParams = field(default_factory=AttentionParams)
    hallucination: HallucinationParams = field(default_factory=HallucinationParams)

    def run(self, name: str) -> RunParams:
        if name not in self.runs:
            raise KeyError(f"params.yaml: no run named {name!r} under `runs` (have {sorted(self.runs)})")
        return self.runs[name]


class ParamsError(ValueError):
    """params.yaml names a key that does not exist or has a value of the wrong type, range or choice."""


# --- what a value may be: types come from the dataclass annotations, ranges and choices from here ----
# Choices that other modules also name (gaze_block, losses, flow, presets) are checked against these
# tuples by tests/test_params.py, so the lists cannot drift apart.
DATA_FORMATS = ("ego4d", "egtea")  # the layouts gazevlm.extract reads (gazevlm.ego4d, gazevlm.egtea)
BACKBONES = ("openflamingo", "openflamingo_noperceiver", "lavila", "internvl", "llava_next")
QUERIES = ("global", "frame")
BLOCK_OUTPUTS = ("pooled", "pooled_lm", "reweighted", "attended")
HEAD_REDUCTIONS = ("mean", "max")
FLOW_BACKENDS = ("dis", "farneback", "raft", "raft_small")
ANNOTATE_SOURCES = ("narrations", "llm")
FUTURE_TARGETS = ("captions", "narrations")
GAZE_INPUTS = ("gaze_text", "gaze_overlay")  # the run switches that make gaze a model input
SCHEDULES = ("constant", "cosine")
SELECT_ON = ("ce", "loss", "last")
KL_DIRECTIONS = ("gaze_to_attention", "attention_to_gaze")
KL_REDUCTIONS = ("sum", "mean")
TASKS = ("future", "activity")  # = gazevlm.layout.TASKS (layout imports nothing from here)
SPLITS = ("train", "val", "test")  # = gazevlm.layout.SPLITS

Rule = Callable[[Any], "str | None"]  # returns what is wrong with a (type-checked) value, or None


def _above(lo: float) -> Rule:
    return lambda v: None if v > lo else f"must be > {lo}"


def _at_least(lo: float) -> Rule:
    return lambda v: None if v >= lo else f"must be >= {lo}"


def _within(lo: float, hi: float, open_low: bool = False) -> Rule:
    def rule(v: float) -> str | None:
        ok = (lo < v if open_low else lo <= v) and v <= hi
        return None if ok else f"must be in {'(' if open_low else '['}{lo}, {hi}]"

    return rule


def _one_of(*choices: str) -> Rule:
    return lambda v: None if v in choices else f"expected one of {list(choices)}"


def _open_unit(v: float) -> str | None:
    return None if 0 < v < 1 else "must be in (0, 1)"


def _tasks(v: tuple) -> str | None:
    if not v or len(set(v)) != len(v) or not set(v) <= set(TASKS):
        return f"expected a non-empty list of distinct tasks from {list(TASKS)}"
    return None


def _seeds(v: tuple) -> str | None:
    if not v or len(set(v)) != len(v) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        return "expected a non-empty list of distinct non-negative integers"
    return None


def _names(v: tuple) -> str | None:
    if not v or len(set(v)) != len(v) or not all(isinstance(x, str) and x for x in v):
        return "expected a non-empty list of distinct names"
    return None


def _fractions(v: dict) -> str | None:
    if not set(v) <= set(SPLITS):
        return f"unknown split(s) {sorted(set(v) - set(SPLITS))} (use {list(SPLITS)})"
    try:
        values = [_number(x) for x in v.values()]
    except _Bad as bad:
        return f"fractions must be numbers ({bad})"
    if any(x < 0 for x in values) or abs(sum(values) - 1.0) > 1e-6:
        return "fractions must be non-negative and sum to 1"
    return None


def _split_uids(v: dict) -> str | None:
    if not set(v) <= set(SPLITS):
        return f"unknown split(s) {sorted(set(v) - set(SPLITS))} (use {list(SPLITS)})"
    if not all(isinstance(u, list) and all(isinstance(x, str) for x in u) for u in v.values() if u is not None):
        return "expected {split: [video_uid, ...]} with lists of strings"
    return None


# dotted key -> rule; `runs.*` applies to every named run. Keys without a rule are checked for type only.
RULES: dict[str, Rule] = {
    "sample.videos": _at_least(1),
    "sample.seconds": _above(0),
    "sample.width": _at_least(1),
    "sample.height": _at_least(1),
    "sample.fps": _above(0),
    "sample.gaze_hz": _above(0),
    "sample.objects": _at_least(1),
    "sample.cue": _at_least(0),
    "data.format": _one_of(*DATA_FORMATS),
    "data.egtea_split": _within(1, 3),
    "sample_egtea.videos": _at_least(2),
    "sample_egtea.seconds": _above(0),
    "sample_egtea.width": _at_least(64),
    "sample_egtea.height": _at_least(64),
    "sample_egtea.gaze_hz": _above(0),
    "sample_egtea.objects": _within(2, 12),
    "sample_egtea.cue": _at_least(0),
    "sample_egtea.test_fraction": _open_unit,
    "extract.keyframe_fps": _above(0),
    "extract.confidence_min": _within(0, 1),
    "extract.saccade_px": _at_least(0),
    "extract.max_gap_s": _at_least(0),
    "extract.window_stride_s": _above(0),
    "extract.future_observe_s": _above(0),
    "extract.future_horizon_s": _above(0),
    "extract.activity_observe_s": _above(0),
    "extract.split_fractions": _fractions,
    "extract.split_uids": _split_uids,
    "annotate.source": _one_of(*ANNOTATE_SOURCES),
    "annotate.tolerance_s": _at_least(0),
    "annotate.qc_max_flagged": _within(0, 1),
    "annotate.future_targets": _one_of(*FUTURE_TARGETS),
    "annotate.llm.chunk_size": _at_least(1),
    "annotate.llm.max_rounds": _at_least(0),
    "annotate.llm.validation_sequences": _at_least(1),
    "annotate.llm.retries": _at_least(0),
    "annotate.llm.backoff_s": _at_least(0),
    "annotate.llm.timeout_s": _above(0),
    "heatmaps.sigma_px": _above(0),
    "heatmaps.delta_ms": _at_least(0),
    "heatmaps.eps_px": _at_least(0),
    "heatmaps.reference_width": _above(0),
    "heatmaps.eta": _within(0, 1),
    "heatmaps.flow": _one_of(*FLOW_BACKENDS),
    "heatmaps.flow_scale": _within(0, 1, open_low=True),
    "heatmaps.target_eps": _at_least(0),
    "heatmaps.heatmap_size": _at_least(1),
    "heatmaps.shard_max_samples": _at_least(1),
    "model.backbone": _one_of(*BACKBONES),
    "model.query": _one_of(*QUERIES),
    "model.block_output": _one_of(*BLOCK_OUTPUTS),
    "model.block_layers": _at_least(1),
    "model.block_patch_layers": _at_least(0),
    "model.head_reduce": _one_of(*HEAD_REDUCTIONS),
    "runs.*.lambda": _at_least(0),
    "train.tasks": _tasks,
    "train.seeds": _seeds,
    "pretrain.steps": _at_least(0),
    "pretrain.batch_size": _at_least(2),
    "pretrain.lr": _above(0),
    "train.nproc_per_node": _at_least(1),
    "train.batch_size": _at_least(1),
    "train.grad_accum": _at_least(1),
    "train.lr": _above(0),
    "train.weight_decay": _at_least(0),
    "train.warmup_steps": _at_least(0),
    "train.schedule": _one_of(*SCHEDULES),
    "train.epochs": _at_least(1),
    "train.grad_clip": _at_least(0),
    "train.kl_direction": _one_of(*KL_DIRECTIONS),
    "train.kl_reduction": _one_of(*KL_REDUCTIONS),
    "train.kl_eps": _above(0),
    "train.num_workers": _at_least(0),
    "train.shuffle_buffer": _at_least(0),
    "train.checkpoint_every_steps": _at_least(0),
    "train.select_on": _one_of(*SELECT_ON),
    "train.validate_every": _at_least(1),
    "train.cpu_threads": _at_least(0),
    "train.parallel_tasks": _at_least(1),
    "evaluate.max_new_tokens": _at_least(1),
    "evaluate.num_beams": _at_least(1),
    "evaluate.bootstrap_samples": _at_least(1),
    "evaluate.batch_size": _at_least(1),
    "evaluate.workers": _at_least(1),
    "attention.topk": _at_least(1),
    "attention.support_threshold": _within(0, 1),
    "attention.overlay_windows": _at_least(0),
    "hallucination.task": _one_of(*TASKS),
    "hallucination.runs": _names,
    "hallucination.seed": _at_least(0),
    "hallucination.windows": _at_least(1),
    "hallucination.sample_seed": _at_least(0),
}


class _Bad(Exception):
    """A value of the wrong type; the message says what was expected."""


def _number(value: Any) -> float:
    """A finite float from a number or a numeric string (YAML 1.1 reads `7e-05`, as DVC writes it, as
    a string); bools are not numbers here."""
    if isinstance(value, bool):
        raise _Bad("expected a number, not true/false")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _Bad("expected a number (e.g. 3e-4)") from None
    if not isinstance(value, (int, float)):
        raise _Bad("expected a number (e.g. 3e-4)")
    if not math.isfinite(value):
        raise _Bad("expected a finite number")
    return float(value)


def _coerce(value: Any, hint: Any) -> Any:
    """`value` as the annotated type (raises _Bad): numbers from numeric strings, tuples from lists."""
    if isinstance(hint, types.UnionType) or get_origin(hint) is Union:
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        (hint,) = [o for o in options if o is not type(None)]
    if hint is bool:
        if not isinstance(value, bool):  # a quoted "false" is a non-empty string, i.e. true: refuse it
            raise _Bad("expected true or false (unquoted)")
        return value
    if hint is int:
        try:
            number = _number(value)
        except _Bad:
            raise _Bad("expected an integer") from None
        if not number.is_integer():
            raise _Bad("expected an integer")
        return int(number)
    if hint is float:
        return _number(value)
    if hint is str:
        if not isinstance(value, str):
            raise _Bad("expected a string")
        return value
    if hint is dict:
        if not isinstance(value, Mapping):
            raise _Bad("expected a mapping")
        return dict(value)
    if hint is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Bad("expected a list")
        return tuple(value)
    return value


def _fail(where: str, value: Any, what: str) -> ParamsError:
    return ParamsError(f"params.yaml: {where} = {value!r}: {what}")


def _build(cls: type[T], values: Mapping[str, Any] | None, where: str, rule_prefix: str | None = None) -> T:
    """One section: unknown keys refused, every given value coerced to its annotated type and checked
    against RULES (`rule_prefix` replaces `where` in the rule lookup, e.g. runs.* for runs.gaze)."""
    if values is not None and not isinstance(values, Mapping):
        raise _fail(where, values, "expected a mapping of keys")
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ParamsError(f"params.yaml: unknown key(s) {unknown} in `{where or 'params'}` (known: {sorted(known)})")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        shown = "lambda" if (cls is RunParams and name == "lam") else name  # params.yaml's spelling
        key = f"{where}.{shown}" if where else shown
        default = getattr(cls(), name) if _has_default(known[name]) else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), _plain(value), key)
            continue
        try:
            coerced = _coerce(value, hints[name])
        except _Bad as bad:
            raise _fail(key, value, str(bad)) from None
        rule = RULES.get(f"{rule_prefix or where}.{shown}" if where else shown)
        problem = rule(coerced) if (rule is not None and coerced is not None) else None
        if problem:
            raise _fail(key, value, problem)  # the value as written, not as coerced
        kwargs[name] = coerced
    return cls(**kwargs)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _plain(value: Any) -> Any:
    """A dataclass value (a section built in code) as the mapping params.yaml would hold."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _check_runs(params: Params) -> None:
    if not params.runs:
        raise ParamsError("params.yaml: `runs` names no run (expected e.g. base, lambda0, gaze)")
    for name, run in params.runs.items():
        if run.lam and not run.block:
            raise ParamsError(
                f"params.yaml: runs.{name}.lambda = {run.lam!r}: lambda > 0 needs block: true "
                "(there is no gaze attention to regularise)"
            )


def from_dict(raw: Mapping[str, Any]) -> Params:
    """Build the typed view from an already-parsed mapping, checking every value (types, ranges,
    choices; see RULES) and coercing numeric strings to numbers."""
    if not isinstance(raw or {}, Mapping):
        raise ParamsError("params.yaml: expected a mapping at the top level")
    raw = dict(raw or {})
    runs_raw = raw.pop("runs", None)
    params = _build(Params, raw, "")
    if runs_raw is not None:
        if not isinstance(runs_raw, Mapping):
            raise _fail("runs", runs_raw, "expected a mapping of run names to switches")
        runs = {}
        for name, switches in runs_raw.items():
            switches = dict(_plain(switches) or {})
            if "lambda" in switches:
                switches["lam"] = switches.pop("lambda")
            runs[name] = _build(RunParams, switches, f"runs.{name}", rule_prefix="runs.*")
        params = dataclasses.replace(params, runs=runs)
    _check_runs(params)
    return params


def to_dict(params: Params) -> dict[str, Any]:
    """The plain mapping of a Params (what params.yaml holds; `lambda`, not `lam`)."""
    raw = {f.name: _plain(getattr(params, f.name)) for f in dataclasses.fields(params) if f.name != "runs"}
    raw["runs"] = {name: run_switches(run) for name, run in params.runs.items()}
    return raw


def run_switches(run: RunParams) -> dict[str, Any]:
    """A run's switches as params.yaml spells them (`lambda`, not `lam`). The gaze-input switches
    appear only when on, so the runs that take no gaze are described (and fingerprinted) exactly as
    before those switches existed."""
    return {"block": run.block, "lambda": run.lam, **{name: True for name in run.gaze_inputs}}


def validate(params: Params) -> Params:
    """Check a Params built in code (e.g. with dataclasses.replace) exactly as params.yaml is checked;
    returns the coerced copy. Raises ParamsError naming the key, the value and what is allowed."""
    return from_dict(to_dict(params))


def load(path: str | Path = "params.yaml") -> Params:
    """Read params.yaml (the only reader of it in the project) and check every value."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as err:
        raise ParamsError(f"{path}: params file not found") from err
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    try:
        return from_dict(raw)
    except ParamsError as err:
        # name the file actually read (it may not be the repository's params.yaml)
        raise ParamsError(str(err).replace("params.yaml:", f"{path}:", 1)) from None


def with_overrides(params: Params, **sections: Mapping[str, Any]) -> Params:
    """Return a checked copy with some keys of some sections replaced, e.g. with_overrides(p, train={"lr": 1e-3})."""
    raw = to_dict(params)
    for section, values in sections.items():
        if section not in raw:
            raise ParamsError(f"params.yaml: unknown section {section!r} (known: {sorted(raw)})")
        if section == "runs":
            raw["runs"] = {**raw["runs"], **{k: _plain(v) for k, v in values.items()}}
        else:
            raw[section] = {**raw[section], **{k: _plain(v) for k, v in values.items()}}
    return from_dict(raw)
