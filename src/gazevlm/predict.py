"""`gazevlm predict VIDEO.mp4 --model DIR`: a trained model on a video that is not in the pipeline.

The video is cut into windows and its keyframes preprocessed as the pipeline does (gazevlm.video_input), and
the evaluate stage's generation (gazevlm.evaluate.predict, greedy) writes one text per window. No gaze
is read or needed. Writes into --out (a staged directory, swapped in on success): predictions.csv,
predictions.json and, with --overlay, overlay.mp4 and overlay.png (gazevlm.overlay).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gazevlm import layout, windows
from gazevlm.video_input import Video, cut_windows, keyframe_pixels, open_video

if TYPE_CHECKING:  # gazevlm.trained imports torch: only when a model is loaded
    from gazevlm.trained import TrainedModel
from gazevlm.out_dir import check_replaceable
from gazevlm.params import with_overrides

MARKER = "predictions.json"
CSV_COLUMNS = tuple(layout.VIDEO_PREDICTIONS_CSV.names)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r}: not a torch device (auto, cpu, cuda, cuda:1, ...)") from None
    return device


def _batches(
    rows: list[dict],
    pixels: dict[int, np.ndarray],
    batch_size: int,
    device,
    progress,
    attention: dict | None = None,
    model=None,
    prompt_fn=None,
) -> Iterator[dict[str, Any]]:
    """Model-ready batches (shards.collate, the evaluation's batch builder); with `attention`, each batch's
    attention maps (attention.extract, the attention stage's extraction) are appended to it first."""
    from gazevlm.attention.extract import attention_maps
    from gazevlm.shards import collate

    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        samples = [
            {
                "frames": np.stack([pixels[f] for f in w["obs_frames"]]),
                "text": "",
                "window_id": w["window_id"],
                "meta": {"uid": w["uid"]},
            }
            for w in chunk
        ]
        batch = collate(samples, with_gaze=False)
        batch["pixels"] = batch["pixels"].to(device)
        if attention is not None:
            for source, maps in attention_maps(model, batch, prompt_fn).items():
                attention.setdefault(source, []).append(maps)
        yield batch
        progress.update(len(chunk))


def _on_device(fn, device):
    def wrapped(*args, **kwargs):
        return {k: v.to(device) for k, v in fn(*args, **kwargs).items()}

    return wrapped


def generate(
    trained: TrainedModel,
    rows: list[dict],
    pixels: dict[int, np.ndarray],
    *,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    with_attention: bool = False,
    show_progress: bool = True,
) -> tuple[list[str], np.ndarray | None, str | None]:
    """(text per window, attention (N, T, P) or None, its source) through the evaluate stage's greedy
    generation; the gaze block's attention, or the backbone's own (models/probe.py) without a block."""
    from tqdm.auto import tqdm

    from gazevlm.evaluate.predict import TextCodec, predict
    from gazevlm.models import text

    device, task = trained.device, trained.task
    codec = TextCodec(encode_prompt=_on_device(text.encode_prompt, device), encode_train=text.encode_train)
    attention: dict | None = {} if with_attention else None

    def prompt_fn(batch):
        enc = codec.encode_prompt(trained.tokenizer, task, batch["pixels"].shape[1], batch["pixels"].shape[0])
        return enc["input_ids"], enc["attention_mask"]

    with tqdm(total=len(rows), unit="window", desc=f"{task} windows", disable=not show_progress) as bar:
        batches = _batches(rows, pixels, batch_size, device, bar, attention, trained.model, prompt_fn)
        df = predict(
            trained.model,
            trained.tokenizer,
            batches,
            task,
            max_new_tokens=max_new_tokens or trained.source.params.evaluate.max_new_tokens,
            num_beams=1,
            teacher_forcing=False,
            codec=codec,
        )
    if [str(w) for w in df["window_id"]] != [w["window_id"] for w in rows]:
        raise RuntimeError("generation returned the windows in another order than they were given")
    if attention is None:
        return df["prediction"].tolist(), None, None
    source = "block" if "block" in attention else "perceiver"
    return df["prediction"].tolist(), np.concatenate(attention[source]), "block" if source == "block" else "backbone"


def _record(
    video: Video,
    trained: TrainedModel,
    spec: windows.WindowSpec,
    keyframe_fps: float,
    max_new_tokens: int,
    rows: list[dict],
    texts: list[str],
    attention_source: str | None,
) -> dict[str, Any]:
    src = trained.source
    return {
        "video": {
            "path": str(video.path),
            "uid": video.uid,
            "fps": video.fps,
            "width": video.width,
            "height": video.height,
            "num_frames": video.num_frames,
            "duration_s": video.duration_s,
        },
        "model": {
            "path": str(src.path),
            "kind": src.kind,
            "run": src.run,
            "task": src.task,
            "seed": src.seed,
            "backbone": trained.model.config["backbone"],
            "preset": trained.model.config["preset"],
            "gaze_block": trained.has_block,
        },
        "windows": {
            "keyframe_fps": keyframe_fps,
            "observe_keyframes": spec.observe,
            "stride_keyframes": spec.stride,
            "horizon_s": spec.horizon_s,
        },
        "generation": {"greedy": True, "max_new_tokens": max_new_tokens},
        "attention_drawn": attention_source,
        "predictions": [
            {
                "window": i,
                "window_id": w["window_id"],
                "t_start": w["t_start"],
                "t_end": w["t_end"],
                "keyframe_frames": w["obs_frames"],
                "keyframe_times": w["obs_times"],
                "horizon_in_video": w["horizon_in_video"],
                "prediction": text,
            }
            for i, (w, text) in enumerate(zip(rows, texts, strict=True))
        ],
    }


def _csv(record: dict[str, Any]) -> pd.DataFrame:
    table = pd.DataFrame(record["predictions"], columns=list(CSV_COLUMNS))
    for col in ("keyframe_frames", "keyframe_times"):  # lists as space-separated values in one cell
        table[col] = [" ".join(str(v) for v in values) for values in table[col]]
    return table


def predict_video(
    video: str | Path | Video,
    trained: TrainedModel,
    out: str | Path,
    *,
    stride_s: float | None = None,
    overlay: bool = False,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Predict every window of `video` with a loaded model (gazevlm.load_model); write `out`; return the
    record written to predictions.json."""
    out = Path(out)
    takes_gaze = trained.source.params.run(trained.source.run).gaze_inputs
    if takes_gaze:  # a gaze-input baseline (Tables 13/15) without its gaze would be tested off its training
        from gazevlm.trained import ModelDirError

        raise ModelDirError(
            f"{trained.source.path}: run {trained.source.run!r} was trained with gaze as an input "
            f"({', '.join(takes_gaze)}); `gazevlm predict` gives a model RGB frames only"
        )
    check_replaceable(out, MARKER)
    ep = trained.source.params.extract
    if stride_s is not None:
        ep = with_overrides(trained.source.params, extract={"window_stride_s": stride_s}).extract
    spec = windows.window_specs(ep)[trained.task]
    info = video if isinstance(video, Video) else open_video(video)
    rows = cut_windows(info, spec, ep.keyframe_fps)
    needed = sorted({f for w in rows for f in w["obs_frames"]})
    pixels = keyframe_pixels(info, needed, trained.model.image_size)
    max_new = max_new_tokens or trained.source.params.evaluate.max_new_tokens
    texts, attention, source = generate(
        trained,
        rows,
        pixels,
        batch_size=batch_size,
        max_new_tokens=max_new,
        with_attention=overlay,
        show_progress=show_progress,
    )
    record = _record(info, trained, spec, ep.keyframe_fps, max_new, rows, texts, source)
    with layout.staged_dir(out) as tmp:
        _csv(record).to_csv(tmp / "predictions.csv", index=False)
        if overlay:
            from gazevlm import overlay as overlay_mod

            overlay_mod.write(tmp, record, [np.stack([pixels[f] for f in w["obs_frames"]]) for w in rows], attention)
        (tmp / MARKER).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


# --- command line -----------------------------------------------------------------------------------


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("video", type=Path, help="the video file (any format OpenCV decodes, e.g. mp4)")
    ap.add_argument(
        "--model",
        required=True,
        type=Path,
        help="an exported model (gazevlm export) or a pipeline model, models/<run>/seed<N>/<task> "
        "(or models/<run>/seed<N> with --task)",
    )
    ap.add_argument("--task", choices=layout.TASKS, help="the model's task (checked; picks the task directory)")
    ap.add_argument("--out", type=Path, help="output directory (default: <video stem>_<task>_predictions)")
    ap.add_argument("--stride-s", type=float, help="seconds between window starts (default: the model's)")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    ap.add_argument(
        "--overlay",
        action="store_true",
        help="also write overlay.mp4 and overlay.png: the "
        "gaze block's attention (the backbone's own without a block) over the frames",
    )
    ap.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    ap.add_argument("--max-new-tokens", type=int, help="default: the evaluate stage's (params.evaluate)")
    ap.add_argument("--weights-dir", type=Path, help="a real preset's pretrained parts (params.model.weights_dir)")
    ap.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from gazevlm.trained import load_model

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    video = open_video(args.video)  # a bad video fails before the model is loaded
    trained = load_model(args.model, task=args.task, device=resolve_device(args.device), weights_dir=args.weights_dir)
    out = args.out or Path(f"{Path(args.video).stem}_{trained.task}_predictions")
    record = predict_video(
        video,
        trained,
        out,
        stride_s=args.stride_s,
        overlay=args.overlay,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        show_progress=not args.no_progress,
    )
    print(f"{len(record['predictions'])} window(s) -> {out}/predictions.csv")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    from gazevlm.command import run_command

    ap = argparse.ArgumentParser(prog="python -m gazevlm.predict", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run_command(run, ap.parse_args(argv), ap.prog)


if __name__ == "__main__":
    raise SystemExit(main())
