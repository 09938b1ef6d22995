"""A trained model outside the pipeline: `load_model(DIR)` reads an exported directory (`gazevlm export`)
or a pipeline model directory (models/<run>/seed<N>/<task>) with the pipeline's own checks.

Weights, config.json and tokenizer/ say what the model is; they do not say how its windows were cut
(params.extract) or how the evaluate stage generates (params.evaluate). An exported directory carries
both in its config.json. A pipeline directory takes them from the project it was trained in, the
nearest parent directory holding a params.yaml, as the pipeline's stages do; that project's model
section must be the checkpoint's (checkpoint.load_trained refuses another), and when its dvc.lock
records the extract stage, the window keys of params.yaml must be the ones the data was cut with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from gazevlm import checkpoint, layout
from gazevlm import params as params_mod
from gazevlm.params import Params
from gazevlm.windows import WindowSpec, window_specs

EXPORT_FORMAT = "gazevlm-export/1"
PARAMS_FILE = "params.yaml"
LOCK_FILE = "dvc.lock"
# What cuts a video into a model's windows (params.extract) and how it generates (params.evaluate).
WINDOW_KEYS = ("keyframe_fps", "window_stride_s", "future_observe_s", "future_horizon_s", "activity_observe_s")
GENERATION_KEYS = ("max_new_tokens", "num_beams")


class ModelDirError(checkpoint.CheckpointError):
    """A directory is not a usable model: not one at all, ambiguous, or from another version or project state."""


@dataclass(frozen=True)
class ModelSource:
    """A model directory as described by its files, before any weight is read."""

    path: Path  # the directory holding config.json
    kind: str  # "export" | "pipeline"
    config: dict[str, Any]  # its config.json
    params: Params  # model/train/runs of the checkpoint; extract, evaluate, data of its project/export
    project: Path | None  # a pipeline directory's project root (None for an export)

    @property
    def task(self) -> str:
        return str(self.config["task"])

    @property
    def run(self) -> str:
        return str(self.config["run"])

    @property
    def seed(self) -> int | None:
        return self.config.get("seed")

    @property
    def window(self) -> WindowSpec:
        """The model's windows: keyframes observed, stride in keyframes, future horizon (gazevlm.windows)."""
        return window_specs(self.params.extract)[self.task]


@dataclass
class TrainedModel:
    """A loaded model in eval mode, its tokenizer, and where it came from."""

    model: torch.nn.Module
    tokenizer: Any
    source: ModelSource

    @property
    def task(self) -> str:
        return self.source.task

    @property
    def has_block(self) -> bool:
        return bool(self.model.config["block"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def resolve_dir(path: str | Path, task: str | None = None) -> Path:
    """The directory holding config.json: `path` itself, or `path/<task>` (e.g. models/gaze/seed0 + future)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: model directory not found")
    if task is not None and task not in layout.TASKS:
        raise ModelDirError(f"unknown task {task!r} (have {list(layout.TASKS)})")
    if (path / checkpoint.CONFIG_FILE).is_file():
        return path
    found = [t for t in layout.TASKS if (path / t / checkpoint.CONFIG_FILE).is_file()]
    if task is not None and task in found:
        return path / task
    if task is not None and found:
        raise ModelDirError(f"{path}: no model of task {task!r} (it holds {found})")
    if task is None and len(found) == 1:
        return path / found[0]
    if found:
        raise ModelDirError(f"{path}: holds models for tasks {found}; choose one with --task")
    raise ModelDirError(
        f"{path}: not a gazevlm model directory (no {checkpoint.CONFIG_FILE}, and no "
        f"{'/'.join(layout.TASKS)} subdirectory with one)"
    )


def find_project(model_dir: Path) -> Path:
    """The nearest parent of a pipeline model directory that holds a params.yaml."""
    for parent in Path(model_dir).resolve().parents:
        if (parent / PARAMS_FILE).is_file():
            return parent
    raise ModelDirError(
        f"{model_dir}: a pipeline model directory outside its project (no {PARAMS_FILE} in any "
        "parent directory says how its windows were cut); run `gazevlm export` inside the project "
        "and use the exported directory"
    )


def read_lock(project: Path) -> dict[str, Any]:
    """The project's dvc.lock stages ({} without one: a project not run through DVC)."""
    path = Path(project) / LOCK_FILE
    if not path.is_file():
        return {}
    try:
        return (yaml.safe_load(path.read_text()) or {}).get("stages", {}) or {}
    except yaml.YAMLError as err:
        raise ModelDirError(f"{path}: not valid YAML: {err}") from None


def check_windows_recorded(project: Path, current: Params) -> None:
    """The window keys of params.yaml must be those dvc.lock records for the extract stage (the data
    the model was trained on); a project whose dvc.lock has no extract stage is not checked."""
    locked = read_lock(project).get("extract", {}).get("params", {}).get(PARAMS_FILE, {}).get("extract")
    if not locked:
        return
    recorded = params_mod.from_dict({"extract": {k: v for k, v in locked.items() if k in WINDOW_KEYS}}).extract
    diff = [k for k in WINDOW_KEYS if k in locked and getattr(recorded, k) != getattr(current.extract, k)]
    if diff:
        shown = ", ".join(
            f"extract.{k} = {getattr(current.extract, k)!r} but dvc.lock records {getattr(recorded, k)!r}" for k in diff
        )
        raise ModelDirError(
            f"{project / PARAMS_FILE}: {shown}: the model was trained on windows cut otherwise "
            "(run `dvc repro`, or restore params.yaml)"
        )


def check_model_section(current: Params, saved: Params, cfg_path: Path, project: Path) -> None:
    """The project's model section must be the checkpoint's (as checkpoint.load_trained checks when it
    builds the model; checked here too so that an export never pairs a model with another project state)."""
    a, b = dataclasses.asdict(current.model), dataclasses.asdict(saved.model)
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in ("weights_dir", "vision_weights")]
    if diff:
        shown = ", ".join(f"model.{k}: checkpoint {b.get(k)!r} vs {PARAMS_FILE} {a.get(k)!r}" for k in diff)
        raise ModelDirError(
            f"{cfg_path}: trained with other model params than {project / PARAMS_FILE} has now "
            f"({shown}); restore params.yaml or retrain"
        )


def describe(path: str | Path, task: str | None = None) -> ModelSource:
    """Read a model directory's config and the settings it is used with; no weight is read."""
    directory = resolve_dir(path, task)
    cfg_path = directory / checkpoint.CONFIG_FILE
    config = checkpoint.read_json(cfg_path)
    if config.get("format") != checkpoint.FORMAT:
        raise ModelDirError(
            f"{cfg_path}: written by another gazevlm version (format {config.get('format')!r}, "
            f"this version reads {checkpoint.FORMAT!r})"
        )
    if task is not None and config.get("task") != task:
        raise ModelDirError(f"{cfg_path}: a model of task {config.get('task')!r}, not {task!r}")
    saved = checkpoint.config_params(config, cfg_path)
    export = config.get("export")
    if export is not None:
        if not isinstance(export, dict) or export.get("format") != EXPORT_FORMAT:
            got = export.get("format") if isinstance(export, dict) else export
            raise ModelDirError(
                f"{cfg_path}: exported by another gazevlm version (format {got!r}, this version "
                f"reads {EXPORT_FORMAT!r})"
            )
        return ModelSource(directory, "export", config, saved, None)
    project = find_project(directory)
    current = params_mod.load(project / PARAMS_FILE)
    check_model_section(current, saved, cfg_path, project)
    check_windows_recorded(project, current)
    # model: the project's (load_trained checks it equals the checkpoint's); train and runs: the checkpoint's
    merged = dataclasses.replace(current, train=saved.train, runs=saved.runs)
    return ModelSource(directory, "pipeline", config, merged, project)


def _with_weights_dir(source: ModelSource, weights_dir: str | Path | None) -> Params:
    """The params to build with: a real preset's pretrained parts come from `weights_dir` (a relative
    params.yaml value is relative to its project)."""
    chosen = weights_dir if weights_dir is not None else source.params.model.weights_dir
    if chosen is not None and source.project is not None and weights_dir is None:
        chosen = str(source.project / chosen)
    model = dataclasses.replace(source.params.model, weights_dir=None if chosen is None else str(chosen))
    return dataclasses.replace(source.params, model=model)


def load_model(
    path: str | Path, task: str | None = None, device: str | torch.device = "cpu", weights_dir: str | Path | None = None
) -> TrainedModel:
    """An exported or pipeline model directory (or its parent and a task), loaded as the evaluate stage
    loads it: strict keys and shapes, the weights' sha256, finite values, and a config this code builds
    identically (checkpoint.load_trained); in eval mode on `device`."""
    source = describe(path, task)
    model, tokenizer = checkpoint.load_trained(
        source.path, params=_with_weights_dir(source, weights_dir), device=device
    )
    return TrainedModel(model, tokenizer, source)
