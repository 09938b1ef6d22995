"""The model card (README.md) of an exported model, written from its config.json alone.

Sections: what the model does, how to use it, the model and its training, the data (root and DVC
fingerprints), the evaluation with its video-bootstrap intervals (metrics/eval/<run>_<task>.json), the
overlap of its attention with held-out gaze (metrics/attention.json), intended use and limitations.
A result the project had not computed when the model was exported is said to be missing, not left out.
"""

from __future__ import annotations

from typing import Any

TEXT_METRICS = ("semantic", "rouge_l", "bleu4", "cider", "object_accuracy", "action_f1", "verb_accuracy")
ATTENTION_METRICS = ("topk_overlap", "chance_topk", "nss", "auc_judd", "kl", "cc")
ATTENTION_SOURCES = {"block": "gaze block", "perceiver": "backbone's own"}
RUN_KINDS = {
    (False, False): "the backbone alone (no gaze block)",
    (True, False): "the backbone with the gaze block, trained without the gaze loss",
    (True, True): "the backbone with the gaze block, its attention regularised toward human gaze",
}


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _estimate(e: dict[str, Any] | None) -> str:
    if not e:
        return "n/a"
    return f"{_num(e.get('mean'))} [{_num(e.get('ci_low'))}, {_num(e.get('ci_high'))}]"


def _what(config: dict[str, Any]) -> tuple[str, bool, float]:
    switches = config["params"]["runs"][config["run"]]
    block, lam = bool(switches["block"]), float(switches["lambda"])
    return RUN_KINDS[(block, lam > 0)], block, lam


def _summary(config: dict[str, Any], name: str) -> list[str]:
    ex, mc = config["params"]["extract"], config["model_config"]
    task, kind = config["task"], _what(config)[0]
    observe = ex["future_observe_s"] if task == "future" else ex["activity_observe_s"]
    frames = int(round(observe * ex["keyframe_fps"]))
    does = (
        f"predicts what happens in the {ex['future_horizon_s']:g} s after them"
        if task == "future"
        else "describes what is happening in them"
    )
    return [
        f"# gazevlm model: run `{config['run']}`, task `{task}`, seed {config.get('seed')}",
        "",
        f"A vision-language model ({mc['backbone']} backbone, `{mc['preset']}` preset; {kind}) that reads {frames} "
        f"RGB keyframes of egocentric video ({ex['keyframe_fps']:g} per second, {observe:g} s) and {does}. "
        "Gaze was used only while training (a KL loss on the gaze block's attention); the model never sees gaze.",
        "",
        "## Use",
        "",
        "```bash",
        f"gazevlm predict my_clip.mp4 --model {name} --overlay   # predictions.csv|json, overlay.mp4|png",
        "```",
        "",
        "```python",
        "import gazevlm",
        "",
        f'loaded = gazevlm.load_model("{name}")   # .model, .tokenizer, .source',
        "```",
        "",
    ]


def _model(config: dict[str, Any]) -> list[str]:
    mc, tr, ev = config["model_config"], config["params"]["train"], config["params"]["evaluate"]
    _, block, lam = _what(config)
    geom = mc["geometry"]
    grid = geom["image_size"] // geom["patch_size"]
    best = config.get("best", {})
    rows = [
        ("backbone / preset", f"{mc['backbone']} / {mc['preset']} (language model: {mc['lm_family']})"),
        (
            "gaze block",
            (
                f"query {mc['query']}, output {mc['block_output']}, {mc['block_layers']} layers, heads "
                f"reduced by {mc['head_reduce']}"
            )
            if block
            else "none",
        ),
        ("gaze loss", f"lambda {lam:g}, KL {tr['kl_direction']}, reduction {tr['kl_reduction']}" if lam else "none"),
        (
            "input",
            f"each keyframe resized (short side) and centre-cropped to {geom['image_size']} px: "
            f"{grid} x {grid} patches of {geom['patch_size']} px",
        ),
        (
            "training",
            f"lr {tr['lr']:g}, {tr['schedule']} schedule, {tr['epochs']} epochs, global batch "
            f"{tr['batch_size']}, vision encoder {'frozen' if tr['freeze_vision'] else 'trained'}, "
            f"seed {config.get('seed')}",
        ),
        (
            "kept checkpoint",
            f"epoch {best.get('epoch')} (best validation {tr['select_on']}: {_num(best.get('value'))})",
        ),
        ("generation", f"greedy, at most {ev['max_new_tokens']} new tokens"),
        ("weights", f"model.safetensors, sha256 {config['weights_sha256']}"),
    ]
    return ["## Model", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]


def _data(config: dict[str, Any]) -> list[str]:
    d = config["export"]["data"]
    world = {
        True: "the synthetic world (gazevlm.sample)",
        False: "an Ego4D-layout root",
        None: "not found in the project when exported",
    }[d["synthetic"]]
    return [
        "## Training data",
        "",
        f"- root: `{d['root']}` ({d['version']}), {world}",
        f"- fingerprint of the root (DVC md5, dvc.lock): `{d['root_md5'] or 'not recorded'}`",
        f"- fingerprint of the training shards (`data/shards`, dvc.lock): `{d['shards_md5'] or 'not recorded'}`",
        f"- exported from `{config['export']['source']}` by gazevlm {config['export']['gazevlm_version']}",
        "",
    ]


def _evaluation(config: dict[str, Any]) -> list[str]:
    ev = config["export"]["evaluation"]
    if not ev:
        return ["## Evaluation", "", "Not evaluated when exported (no metrics/eval file for this run and task).", ""]
    seed = str(config.get("seed"))
    own = ev.get("per_seed", {}).get(seed, {})
    lines = [
        "## Evaluation (test split)",
        "",
        f"Free greedy generation on {ev.get('n')} test windows of {ev.get('n_videos')} videos; mean and 95% "
        f"video-bootstrap interval, pooled over seeds {ev.get('seeds')} and for this model's seed {seed}.",
        "",
        f"| metric | seeds {ev.get('seeds')} | seed {seed} |",
        "|---|---|---|",
    ]
    lines += [f"| {m} | {_estimate(ev.get(m))} | {_estimate(own.get(m))} |" for m in TEXT_METRICS if m in ev]
    lines.append(
        f"| distinct_predictions | {_num(ev.get('distinct_predictions'))} | {_num(own.get('distinct_predictions'))} |"
    )
    drop = ev.get("shuffled_frames", {}).get("drop", {}).get("semantic")
    if drop:
        lines += [
            "",
            f"Frames of another video instead (shuffled-frames control): semantic drop {_num(drop['diff'])} "
            f"[{_num(drop['ci_low'])}, {_num(drop['ci_high'])}], p = {_num(drop['p_value'])}.",
        ]
    if ev.get("chance"):
        lines += ["", "Chance levels: " + ", ".join(f"{k} {_num(v)}" for k, v in sorted(ev["chance"].items())) + "."]
    return lines + [""]


def _attention(config: dict[str, Any]) -> list[str]:
    att = config["export"]["attention"]
    if not att:
        return ["## Attention and gaze", "", "Not measured when exported (no metrics/attention.json entry).", ""]
    lines = [
        "## Attention and gaze (test split, held-out gaze)",
        "",
        f"Measured on seed {att['seed']} of this run; mean and 95% video-bootstrap interval per frame.",
        "",
        "| attention | " + " | ".join(ATTENTION_METRICS) + " |",
        "|---" * (len(ATTENTION_METRICS) + 1) + "|",
    ]
    for source, metrics in sorted(att["sources"].items()):
        cells = " | ".join(_estimate(metrics.get(m)) for m in ATTENTION_METRICS)
        lines.append(f"| {ATTENTION_SOURCES.get(source, source)} | {cells} |")
    return lines + [""]


def _use_and_limits(config: dict[str, Any]) -> list[str]:
    synthetic = config["export"]["data"]["synthetic"]
    limits = [
        (
            "Trained on the synthetic world: a procedural table-top scene with a closed vocabulary of objects "
            "and actions. On other video, real egocentric recordings included, its texts name things of that "
            "world and mean nothing."
        )
        if synthetic
        else "Trained on one dataset; expect it to fail on scenes, cameras and activities unlike it.",
        "The input is fixed: keyframes at the rate and count above, centre-cropped (the sides of a wide video "
        "are not seen).",
        "The attention drawn by `--overlay` shows where the model looked, not why it wrote its text.",
        "The intervals describe test videos of the training data's world, not other data.",
    ]
    if config["model_config"]["preset"] == "tiny":
        limits.insert(
            1,
            "The `tiny` preset is a small vision encoder and language model trained from scratch: "
            "a research instrument, not a capable captioner.",
        )
    return [
        "## Intended use",
        "",
        "Research on gaze-regularised attention in vision-language models: reproducing and comparing runs, "
        "looking at where a model attends, demonstrations on short clips like the training data. Not for "
        "decisions about people, and not for safety-relevant use.",
        "",
        "## Limitations",
        "",
        *[f"- {item}" for item in limits],
        "",
    ]


def render(config: dict[str, Any], name: str) -> str:
    """README.md of an export from its config.json (`name`: how the card refers to the directory)."""
    parts = [
        _summary(config, name),
        _model(config),
        _data(config),
        _evaluation(config),
        _attention(config),
        _use_and_limits(config),
    ]
    return "\n".join(line for part in parts for line in part).rstrip() + "\n"
