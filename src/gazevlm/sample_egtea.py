"""A small synthetic world written in the EGTEA Gaze+ layout (gazevlm.egtea): Table 4's offline default.

The table world of gazevlm.sample (its planning, rendering and gaze simulation are called here, not
copied), written as an EGTEA download is: 24 fps session videos at params.sample_egtea's resolution
(4:3 like EGTEA's 640 x 480), gaze as SMI BeGaze text exports at gaze_hz (30 Hz, as EGTEA's glasses)
in the gaze camera's 1280 x 960 frame with BeGaze's event types (velocity-typed fixations and saccades,
blinks with zeroed points, a few unknowns), and action labels in EGTEA's style ("Take red_cup": verb and
noun indices, clips named by their start and end) with index and split files. Half the sessions use an
older BeGaze export (a shorter header, left-eye columns, plain frame numbers, a nominal sample count),
half a newer one (a longer header, binocular columns, hh:mm:ss:ff timecodes, a message row), so a reader
must handle both. Its own seed (params.sample_egtea.seed): no video repeats one of the default world.
The same params give the same bytes (and videos that decode to the same frames).
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from gazevlm import ego4d, egtea, sample
from gazevlm.params import EgteaSampleParams, Params, SampleParams

MARKER = "synthetic_egtea.json"  # written last; its presence says the root is ours to overwrite
RECIPES = (
    "PastaSalad",
    "Cheeseburger",
    "GreekSalad",
    "Pizza",
    "TurkeySandwich",
    "ContinentalBreakfast",
    "BaconAndEggs",
)
VERB_OF = {"pick": "Take", "put_in": "Put", "put_on": "Put", "put_table": "Put", "open": "Open", "close": "Close"}
VERBS = ("Take", "Put", "Open", "Close")
NOUNS = tuple(f"{colour}_{kind}" for colour in sample.COLOURS for kind in sample.KINDS)
ACTIONS = tuple((v, n) for v in VERBS for n in NOUNS)
SEGMENT_S = (0.5, 0.4)  # a clip runs from this long before the hand's contact to this long after
SACCADE_PX_S = 1000.0  # velocity threshold (gaze-camera px / s) of the event typing
UNKNOWN_SHARE = 0.01  # samples BeGaze could not type ("-")
BLINK_CONFIDENCE = 0.6  # the simulation's blinks have confidence below this
TIME0_US = 4_811_032_504  # BeGaze's clock does not start at zero
EVENTS, CLIPS = 7, 8  # random streams of their own (gazevlm.sample uses 0-4)

OLD_COLUMNS = ("Time", "Type", "Trial", "L POR X [px]", "L POR Y [px]", "Frame", "L Event Info")
NEW_COLUMNS = (
    "Time",
    "Type",
    "Trial",
    "L Raw X [px]",
    "L Raw Y [px]",
    "B POR X [px]",
    "B POR Y [px]",
    "L Dia X [px]",
    "L Dia Y [px]",
    "L Mapped Diameter [mm]",
    "R Raw X [px]",
    "R Raw Y [px]",
    "R Dia X [px]",
    "R Dia Y [px]",
    "R Mapped Diameter [mm]",
    "L EPOS X",
    "L EPOS Y",
    "L EPOS Z",
    "R EPOS X",
    "R EPOS Y",
    "R EPOS Z",
    "L GVEC X",
    "L GVEC Y",
    "L GVEC Z",
    "Frame",
    "B Event Info",
)


def sample_params(es: EgteaSampleParams) -> SampleParams:
    """The Ego4D-world params that plan this world's videos (EGTEA's 24 fps, this world's seed and size)."""
    return SampleParams(
        root=es.root,
        seed=es.seed,
        videos=es.videos,
        seconds=es.seconds,
        width=es.width,
        height=es.height,
        fps=int(egtea.FPS),
        gaze_hz=es.gaze_hz,
        objects=es.objects,
        cue=es.cue,
    )


def session_name(index: int) -> str:
    return f"P{index + 1:02d}-R{index % len(RECIPES) + 1:02d}-{RECIPES[index % len(RECIPES)]}"


# --- gaze -------------------------------------------------------------------------------------------------


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, stream])


def begaze_samples(plan: sample.VideoPlan, rng: np.random.Generator) -> pd.DataFrame:
    """The simulated gaze of a plan as BeGaze samples: time_us, frame, x, y (gaze camera px, origin
    top-left), event (Fixation | Saccade | Blink | -); `rng` draws the unknowns."""
    table, _ = sample.simulate_gaze(plan, _rng(plan.seed, plan.index, sample.GAZE))
    t = table["canonical_timestamp_s"].to_numpy()
    gw, gh = egtea.GAZE_FRAME
    x = table["norm_pos_x"].to_numpy() * gw
    y = (1.0 - table["norm_pos_y"].to_numpy()) * gh  # the simulation writes Ego4D's bottom-left origin
    blink = table["confidence"].to_numpy() < BLINK_CONFIDENCE
    unknown = ~blink & (rng.random(len(t)) < UNKNOWN_SHARE)
    tracked = np.flatnonzero(~blink & ~unknown)
    speed = np.zeros(len(t))
    if len(tracked) > 1:
        step = np.hypot(np.diff(x[tracked]), np.diff(y[tracked])) / np.maximum(np.diff(t[tracked]), 1e-6)
        speed[tracked[1:]] = step
    event = np.where(blink, "Blink", np.where(unknown, "-", np.where(speed > SACCADE_PX_S, "Saccade", "Fixation")))
    x, y = np.where(blink, 0.0, x), np.where(blink, 0.0, y)  # BeGaze reports no point during a blink
    frame = np.clip(np.floor(t * egtea.FPS).astype(np.int64), 0, plan.num_frames - 1)
    return pd.DataFrame(
        {"time_us": TIME0_US + np.round(t * 1e6).astype(np.int64), "frame": frame, "x": x, "y": y, "event": event}
    )


def timecode(frame: int) -> str:
    fps = int(egtea.FPS)
    seconds, ff = divmod(int(frame), fps)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}:{ff:02d}"


def _header(session: str, newer: bool, stated_samples: int, gaze_hz: int) -> list[str]:
    """BeGaze's `##` header: the newer export has one more line before the sample count and more after."""
    participant, _, recipe = session.split("-", 2)
    lines = [
        "[BeGaze]",
        f"Converted from:\tD:\\EGTEA\\{session}-eye.idf",
        "Date:\t12.03.2015 14:02:11",
        f"Version:\tBeGaze {'3.6.52' if newer else '3.4.27'}",
        "IDF Version:\t9",
        f"Sample Rate:\t{gaze_hz}",
        "Separator Type:\tMsg",
        "Trial Count:\t1",
        "Uses Plane File:\tFalse",
    ]
    if newer:
        lines.append("Export Version:\t2")
    lines += [
        f"Number of Samples:\t{stated_samples}",
        "Reversed:\tnone",
        "[Run]",
        f"Subject:\t{participant}",
        f"Description:\t{recipe}",
        "[Calibration]",
        "Calibration Type:\t3-point",
        f"Calibration Area:\t{egtea.GAZE_FRAME[0]}\t{egtea.GAZE_FRAME[1]}",
        "[Geometry]",
        "Stimulus Dimension [mm]:\t0\t0",
        "Head Distance [mm]:\t0",
        "[Hardware Setup]",
        "[Presentation]",
        "Number of Trials:\t1",
    ]
    if newer:
        lines += [
            "[Extras]",
            "Gaze Mapping:\tScene camera",
            "Smoothing:\tnone",
            "Scene Video:\t24 fps",
            "Filter Depth:\t0",
        ]
    lines.append("Format:\tLEFT, RIGHT, POR, FRAME, EVENT" if newer else "Format:\tLEFT, POR, FRAME, EVENT")
    return ["## " + line for line in lines] + ["## "]


def _row(s, newer: bool) -> str:
    x, y = f"{s.x:.2f}", f"{s.y:.2f}"
    if not newer:
        return "\t".join((str(s.time_us), "SMP", "1", x, y, str(s.frame), s.event))
    filler = ["0.00"] * 2 + [x, y] + ["14.20", "13.90", "3.41"] + ["0.00"] * 2 + ["14.10", "13.80", "3.38"]
    filler += ["0.00"] * 9
    return "\t".join([str(s.time_us), "SMP", "1", *filler, timecode(s.frame), s.event])


def write_begaze(path: Path, samples: pd.DataFrame, session: str, newer: bool, nominal: int, gaze_hz: int) -> None:
    """Write one BeGaze text export (Windows line ends, as BeGaze writes them)."""
    stated = len(samples) if newer else nominal
    lines = _header(session, newer, stated, gaze_hz)
    lines.append("\t".join(NEW_COLUMNS if newer else OLD_COLUMNS))
    if newer:
        lines.append(f"{samples['time_us'].iloc[0] - 1}\tMSG\t1\t# Message: recording {session}")
    lines += [_row(s, newer) for s in samples.itertuples(index=False)]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("latin-1"))


# --- action labels -----------------------------------------------------------------------------------------


def clips(plan: sample.VideoPlan, session: str) -> list[dict]:
    """One labelled clip per action of the plan, named as EGTEA names its clips."""
    out = []
    last = plan.num_frames - 1
    for a in plan.actions:
        verb, noun = VERB_OF[a.verb], plan.things[a.obj].name.replace(" ", "_")
        t0, t1 = max(0.0, a.contact_s - SEGMENT_S[0]), min(last / egtea.FPS, a.contact_s + SEGMENT_S[1])
        f0, f1 = int(round(t0 * egtea.FPS)), int(round(t1 * egtea.FPS))
        name = f"{session}-{int(round(t0 * 1000))}-{int(round(t1 * 1000))}-F{f0:06d}-F{f1:06d}"
        out.append(
            {
                "clip": name,
                "action": ACTIONS.index((verb, noun)) + 1,
                "verb": VERBS.index(verb) + 1,
                "noun": NOUNS.index(noun) + 1,
            }
        )
    return out


def test_sessions(es: EgteaSampleParams) -> set[int]:
    """Indices of the sessions whose clips go to test_split1.txt (a seeded choice, 1 to videos - 1)."""
    n_test = min(max(int(round(es.test_fraction * es.videos)), 1), es.videos - 1)
    return {int(i) for i in np.random.default_rng([es.seed, CLIPS]).permutation(es.videos)[:n_test]}


# --- files ---------------------------------------------------------------------------------------------------


def write_one(es: EgteaSampleParams, index: int, root: Path) -> dict:
    """One session's video and BeGaze export; returns its clips and a summary."""
    sp = sample_params(es)
    plan = sample.plan_video(sp, index)
    session = session_name(index)
    video = root / egtea.VIDEO_DIRS[0] / f"{session}.mp4"
    g = plan.geom
    written = sample.write_video(video, sample.render_frames(plan), plan.fps, (g.width, g.height))
    probe = ego4d.probe_video(video)
    if written != plan.num_frames or probe.num_frames != plan.num_frames:
        raise RuntimeError(
            f"{video}: wrote {written} frames, OpenCV reads back {probe.num_frames}, expected {plan.num_frames}"
        )
    samples = begaze_samples(plan, _rng(es.seed, index, EVENTS))
    newer = index % 2 == 1
    write_begaze(
        root / egtea.GAZE_DIR / f"{session}.txt", samples, session, newer, int(plan.duration_s * es.gaze_hz), es.gaze_hz
    )
    events = samples["event"].value_counts()
    return {
        "session": session,
        "clips": clips(plan, session),
        "summary": {
            "frames": plan.num_frames,
            "begaze": "newer" if newer else "older",
            "samples": len(samples),
            "actions": len(plan.actions),
            "events": {e: int(events.get(e, 0)) for e in ("Fixation", "Saccade", "Blink", "-")},
        },
    }


def _clear(root: Path) -> None:
    """Remove a previous synthetic EGTEA world; refuse to touch anything else (e.g. a real download)."""
    if not root.exists():
        return
    if not (root / MARKER).is_file() and any(root.iterdir()):
        raise FileExistsError(
            f"{root}: exists and is not a synthetic EGTEA world (no {MARKER}); refusing to "
            "overwrite it. Point params.sample_egtea.root elsewhere."
        )
    shutil.rmtree(root)


def _write_annotations(root: Path, es: EgteaSampleParams, results: list[dict]) -> None:
    folder = root / egtea.ANNOTATION_DIR
    for what, names in (("verb", VERBS), ("noun", NOUNS), ("action", [f"{v} {n}" for v, n in ACTIONS])):
        (folder / egtea.INDEX_FILES[what]).write_text("".join(f"{n} {k}\n" for k, n in enumerate(names, start=1)))
    test = test_sessions(es)
    lines: dict[str, list[str]] = {split: [] for split in egtea.SPLIT_NAMES}
    for i, result in enumerate(results):
        split = "test" if i in test else "train"
        lines[split] += [f"{c['clip']} {c['action']} {c['verb']} {c['noun']}\n" for c in result["clips"]]
    for split, rows in lines.items():
        egtea.split_path(root, split, 1).write_text("".join(sorted(rows)))


def is_current(es: EgteaSampleParams) -> bool:
    """Whether es.root already holds the world these params write (its marker records them, and every
    session's video and BeGaze file is there)."""
    root = Path(es.root)
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if not isinstance(marker, dict) or marker.get("params") != _params_dict(es):
        return False
    return all(
        (root / egtea.VIDEO_DIRS[0] / f"{s}.mp4").is_file() and (root / egtea.GAZE_DIR / f"{s}.txt").is_file()
        for s in marker.get("sessions", {})
    )


def _params_dict(es: EgteaSampleParams) -> dict:
    """What the world's bytes depend on (not where it is written)."""
    return {k: getattr(es, k) for k in es.__dataclass_fields__ if k != "root"}


def write_world(es: EgteaSampleParams, workers: int = 1) -> dict:
    """Write the whole world under es.root; returns the per-session summaries."""
    root = Path(es.root)
    _clear(root)
    for sub in (egtea.VIDEO_DIRS[0], egtea.GAZE_DIR, egtea.ANNOTATION_DIR):
        (root / sub).mkdir(parents=True, exist_ok=True)
    n = es.videos
    if workers > 1 and n > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(write_one, [es] * n, range(n), [root] * n))
    else:
        results = [write_one(es, i, root) for i in range(n)]
    _write_annotations(root, es, results)
    test = test_sessions(es)
    report = {
        "generator": "gazevlm.synthetic_egtea",  # the old module name, kept: the same bytes
        "params": _params_dict(es),
        "sessions": {
            r["session"]: {**r["summary"], "split": "test" if i in test else "train", "clips": len(r["clips"])}
            for i, r in enumerate(results)
        },
    }
    (root / MARKER).write_text(json.dumps(report, indent=1) + "\n")
    return report


def run(params: Params, workers: int | None = None) -> dict:
    """Write params.sample_egtea's world unless it is already there; return its report."""
    es = params.sample_egtea
    if is_current(es):
        return {**json.loads((Path(es.root) / MARKER).read_text()), "reused": True}
    return write_world(es, workers if workers is not None else max(1, min(os.cpu_count() or 1, 2)))
