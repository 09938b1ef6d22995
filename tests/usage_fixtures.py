"""A small trained project for the predict and export tests: the tiny world extracted, two tiny trained
models (gaze and base, future task) at models/<run>/seed0/future, a params.yaml, and short mp4 clips.

Import the fixtures a test module needs (`from usage_fixtures import project, clip, tiny_world`).
"""

from __future__ import annotations

import io
import json
import shutil
from contextlib import chdir
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from ego4d_fixtures import tiny_world  # noqa: F401  (a fixture this module's fixtures use)
from gazevlm import extract, layout, params, sample
from gazevlm.heatmaps.crop import CropGeometry
from train_fixtures import TASK, run_in_process, tiny_params

MAX_NEW_TOKENS = 6
SEED = 0


@dataclass(frozen=True)
class Project:
    root: Path
    world: Path

    def model_dir(self, run: str = "gaze") -> Path:
        return layout.run_dir(run, TASK, SEED, self.root / layout.MODELS_DIR)

    def params(self) -> params.Params:
        return params.load(self.root / "params.yaml")


def project_params(world: Path) -> params.Params:
    """The trained models' params (train_fixtures.tiny_params) reading the tiny world, generating 6 tokens."""
    return params.with_overrides(tiny_params(), data={"root": str(world)}, evaluate={"max_new_tokens": MAX_NEW_TOKENS})


@pytest.fixture(scope="module")
def project(tiny_world, tmp_path_factory) -> Project:  # noqa: F811
    root = tmp_path_factory.mktemp("project")
    p = project_params(tiny_world)
    (root / "params.yaml").write_text(yaml.safe_dump(params.to_dict(p), sort_keys=False))
    before = torch.get_num_threads()
    with chdir(root):
        extract.run(p)
        for run in ("gaze", "base"):
            run_in_process(
                threads=1,
                result_path=None,
                source={},
                train_kwargs={
                    "run": run,
                    "task": TASK,
                    "seed": SEED,
                    "out_dir": layout.run_dir(run, TASK, SEED),
                    "live_dir": root / "live" / run,
                },
            )
    torch.set_num_threads(before)
    return Project(root, tiny_world)


def write_clip(path: Path, seconds: float, width: int = 176, height: int = 144, fps: int = 30) -> Path:
    """A short synthetic-world mp4 (gazevlm.sample), not square, so the preset's crop cuts its sides."""
    sp = params.with_overrides(
        params.from_dict({}), sample={"seconds": seconds, "width": width, "height": height, "fps": fps, "seed": 7}
    ).sample
    plan = sample.plan_video(sp, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample.write_video(path, sample.render_frames(plan), fps, (width, height))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """7 s at 30 fps: keyframes 0..6 s, so three future windows (5 keyframes, 1 s stride) of which the last
    has no keyframe within its 2 s horizon."""
    return write_clip(tmp_path_factory.mktemp("clip") / "my clip.mp4", 7)


def pipeline_pixels(video: Path, frames: list[int], size: int) -> dict[int, np.ndarray]:
    """The pipeline's frames written out step by step, independently of gazevlm.predict: OpenCV decodes
    in order, extract's JPEG (quality 95), PIL decodes it (heatmaps.frames.read_image), resize + centre crop,
    the shard's JPEG (quality 95), OpenCV decodes it to RGB (gazevlm.shards)."""
    from PIL import Image

    cap = cv2.VideoCapture(str(video))
    decoded, index = {}, 0
    while len(decoded) < len(frames):
        ok, bgr = cap.read()
        assert ok, f"{video}: frame {index} did not decode"
        if index in frames:
            decoded[index] = bgr
        index += 1
    cap.release()
    out = {}
    for f, bgr in decoded.items():
        native = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
        rgb = np.asarray(Image.open(io.BytesIO(native.tobytes())).convert("RGB"))
        crop = CropGeometry.for_frame(bgr.shape[1], bgr.shape[0], size).apply(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        shard = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
        out[f] = cv2.cvtColor(cv2.imdecode(shard, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out


def read_video_frames(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(frames that decode, fps, (width, height)) of a written video."""
    cap = cv2.VideoCapture(str(path))
    n, size = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n, size = n + 1, (frame.shape[1], frame.shape[0])
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return n, fps, size


def copy_project(project: Project, root: Path) -> Path:
    """params.yaml and the gaze model of `project` in a project of one's own (to break); returns the model dir."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(project.root / "params.yaml", root / "params.yaml")
    model = layout.run_dir("gaze", TASK, SEED, root / layout.MODELS_DIR)
    shutil.copytree(project.model_dir("gaze"), model)
    return model


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
