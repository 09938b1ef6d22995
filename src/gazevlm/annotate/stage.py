"""The annotate stage: one caption per keyframe a window uses, then each window's text target.

Reads data/extract/{keyframes,windows}.parquet and, for the narrations source, the Ego4D
narration.json under params.data.root/<version>/annotations/ (EGTEA Gaze+, params.data.format egtea:
its action labels, see annotate/actions.py). Writes data/annotate/{captions,
targets}.parquet, data/annotate/prompt_history.json and reports/annotate.json (layout.py).

Window targets: the captions of the window's target keyframes in time order, empty ones left out,
consecutive duplicates removed (dedupe_consecutive), joined with params.annotate.joiner. A window is
dropped (kept in the table with dropped=True and a reason) when
- failed_chunk: one of its target keyframes lies in an LLM chunk that failed (never filled in);
- no_caption:   none of its target keyframes has a caption (no narration within tolerance);
- qc_flagged:   more than qc_max_flagged of its target keyframes carry a QC flag (qc.py).

With params.annotate.future_targets = narrations (Table 20's coarse targets), a future window's target is
instead the raw narrations of its horizon (t_last, t_last + tau_a] (one pass, cleaned like the narration
captions, in time order, consecutive duplicates removed, joined the same way); n_frames then counts
those narrations, QC flags them, and a window without any is dropped as no_narration.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .. import atomic, ego4d, egtea, layout
from ..params import ANNOTATE_SOURCES, Params, validate
from . import actions as action_captions
from . import qc
from .cache import ResponseCache
from .llm_captions import ChunkResult, annotate_chunks, make_chunks, sha256_text
from .llm_client import ChatClient
from .narrations import NarrationIndex, caption_keyframes, clean_narration, load_narrations, narrations_between
from .refine import RefinementSession, load_feedback, replay, select_validation

log = logging.getLogger(__name__)

SOURCES = ANNOTATE_SOURCES
DROP_REASONS = ("failed_chunk", "no_caption", "qc_flagged", "no_target_frames")
NO_NARRATION = "no_narration"  # future_targets: narrations only


def paths(root: str | Path = ".") -> dict[str, Path]:
    """Every file the stage reads or writes, under the repository root."""
    root = Path(root)
    out = root / layout.ANNOTATE_DIR
    return {
        "keyframes": root / layout.EXTRACT_DIR / "keyframes.parquet",
        "windows": root / layout.EXTRACT_DIR / "windows.parquet",
        "captions": out / "captions.parquet",
        "targets": out / "targets.parquet",
        "prompt_history": out / "prompt_history.json",
        "cache": out / "cache",
        "report": root / layout.REPORTS_DIR / "annotate.json",
    }


def run(params: Params, root: str | Path = ".") -> dict[str, Any]:
    """Caption the keyframes, build the window targets, write the outputs; return the report."""
    root = Path(root)
    a = validate(params).annotate  # source, qc_max_flagged, llm ranges: checked by gazevlm.params
    p = paths(root)
    keyframes, windows = load_inputs(p["keyframes"], p["windows"])
    used = used_keyframes(keyframes, windows)

    failed_keyframes: set[str] = set()
    if a.source == "narrations":
        captions, source_report, history = _captions_from_narrations(params, root, used)
    else:
        captions, source_report, history, failed_keyframes = _captions_from_llm(params, root, used)

    captions["source"] = a.source
    sources = captions["narration_text"] if "narration_text" in captions else [None] * len(captions)
    captions["flags"] = [
        qc.flag_caption(c, src) if isinstance(c, str) else []
        for c, src in zip(captions["caption"], sources, strict=True)
    ]
    captions["flagged"] = captions["flags"].map(bool)
    captions = captions[list(layout.CAPTIONS.names)]
    targets = build_targets(
        windows,
        captions,
        joiner=a.joiner,
        dedupe_consecutive=a.dedupe_consecutive,
        qc_max_flagged=a.qc_max_flagged,
        failed_keyframes=failed_keyframes,
    )
    if a.future_targets == "narrations":
        index = horizon_narrations(params, root)
        future = windows["task"] == "future"
        coarse = build_narration_targets(
            windows[future],
            keyframes,
            index,
            joiner=a.joiner,
            dedupe_consecutive=a.dedupe_consecutive,
            qc_max_flagged=a.qc_max_flagged,
        )
        targets = (
            pd.concat([targets[~future.to_numpy()], coarse])
            .set_index("window_id")
            .loc[windows["window_id"].astype(str)]
            .reset_index()[list(layout.TARGETS.names)]
        )

    report = build_report(a.source, keyframes, captions, targets)
    report[a.source] = source_report
    if a.future_targets != "captions":
        report["future_targets"] = a.future_targets
    if a.source == "llm":
        report["llm"]["windows_skipped_failed_chunk"] = int((targets["drop_reason"] == "failed_chunk").sum())

    p["cache"].mkdir(parents=True, exist_ok=True)  # a declared DVC output even for the narrations source
    _write_parquet(captions, layout.CAPTIONS, p["captions"])
    _write_parquet(targets, layout.TARGETS, p["targets"])
    atomic.write_json(p["prompt_history"], history, ensure_ascii=False)
    atomic.write_json(p["report"], report, ensure_ascii=False)
    log.info(
        "annotate: %d/%d keyframes captioned, %d/%d windows kept",
        report["keyframes"]["captioned"],
        report["keyframes"]["used_by_windows"],
        report["windows"]["kept"],
        report["windows"]["total"],
    )
    return report


# --- inputs ---------------------------------------------------------------------------------------


def load_inputs(keyframes_path: Path, windows_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    keyframes = layout.read_table(keyframes_path, layout.KEYFRAMES)
    windows = layout.read_table(windows_path, layout.WINDOWS)
    dup = keyframes["keyframe_id"][keyframes["keyframe_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{keyframes_path}: duplicated keyframe_id {sorted(set(dup))[:5]}")
    known = set(keyframes["keyframe_id"])
    for column in ("obs_keyframe_ids", "target_keyframe_ids"):
        missing = {k for ids in windows[column] for k in _ids(ids)} - known
        if missing:
            raise ValueError(
                f"{windows_path}: {column} names {len(missing)} keyframe(s) absent from "
                f"{keyframes_path.name}, e.g. {sorted(missing)[:3]}"
            )
    keyframes = keyframes.astype({"keyframe_id": str, "uid": str, "frame": "int64", "t": "float64"})
    return keyframes, windows


def _ids(ids: Any) -> list[str]:
    return [] if ids is None else [str(k) for k in ids]


def used_keyframes(keyframes: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    """The keyframes some window observes or targets, ordered by video and frame."""
    ids = {k for column in ("obs_keyframe_ids", "target_keyframe_ids") for v in windows[column] for k in _ids(v)}
    return keyframes[keyframes["keyframe_id"].isin(ids)].sort_values(["uid", "frame"]).reset_index(drop=True)


# --- sources --------------------------------------------------------------------------------------


def _captions_from_narrations(params: Params, root: Path, used: pd.DataFrame):
    if params.data.format == "egtea":
        return _captions_from_actions(params, root, used)
    data_root = resolve_path(root, params.data.root)
    path = ego4d.version_dir(data_root, params.data.version) / ego4d.NARRATION_FILE
    index = load_narrations(data_root, params.data.version)
    matched = caption_keyframes(used, index, params.annotate.tolerance_s)
    captions = used[["keyframe_id", "uid", "frame", "t"]].merge(
        matched[["keyframe_id", "caption", "narration_text"]], on="keyframe_id", how="left"
    )
    uids = sorted(used["uid"].unique())
    report = {
        "file": str(path.relative_to(root)) if path.is_relative_to(root) else str(path),
        "videos_in_file": len(index.by_uid),
        "videos_without_narrations": [u for u in uids if not index.by_uid.get(u)],
        "entries_skipped": dict(sorted(index.skipped.items())),
        "tolerance_s": params.annotate.tolerance_s,
    }
    history = {
        "source": "narrations",
        "note": "captions are cleaned Ego4D narrations; no prompt was used",
        "narration_file": report["file"],
    }
    return captions, report, history


def horizon_narrations(params: Params, root: Path) -> NarrationIndex:
    """What the future targets are read from with annotate.future_targets = narrations: Ego4D's narration
    file, or for EGTEA Gaze+ (no narrations) its action labels, one per segment at its start."""
    data_root = resolve_path(root, params.data.root)
    if params.data.format == "egtea":
        actions, _ = egtea.read_actions(data_root, params.data.egtea_split)  # skips: counted by the captions
        return action_captions.narration_index(actions)
    return load_narrations(data_root, params.data.version)


def _captions_from_actions(params: Params, root: Path, used: pd.DataFrame):
    """EGTEA Gaze+: captions from the action labels of the split files (both train and test: a caption
    is the reference text, whichever split its window is in)."""
    data_root = resolve_path(root, params.data.root)
    folder = data_root / egtea.ANNOTATION_DIR
    actions, skipped = egtea.read_actions(data_root, params.data.egtea_split)
    matched = action_captions.caption_keyframes(used, actions, params.annotate.tolerance_s)
    captions = used[["keyframe_id", "uid", "frame", "t"]].merge(
        matched[["keyframe_id", "caption", "narration_text"]], on="keyframe_id", how="left"
    )
    sessions = set(actions["session"])
    shown = str(folder.relative_to(root)) if folder.is_relative_to(root) else str(folder)
    report = {
        "file": shown,
        "videos_in_file": len(sessions),
        "videos_without_narrations": [u for u in sorted(used["uid"].unique()) if u not in sessions],
        "entries_skipped": dict(sorted(skipped.items())),
        "tolerance_s": params.annotate.tolerance_s,
    }
    history = {
        "source": "narrations",
        "note": "captions are EGTEA action labels written as narrations and cleaned like Ego4D's; no prompt was used",
        "narration_file": shown,
    }
    return captions, report, history


def client_from_params(params: Params) -> ChatClient:
    llm = params.annotate.llm
    return ChatClient(
        model=llm.model,
        base_url_env=llm.base_url_env,
        api_key_env=llm.api_key_env,
        timeout_s=llm.timeout_s,
        retries=llm.retries,
        backoff_s=llm.backoff_s,
    )


def resolve_path(root: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else root / path


def build_session(params: Params, root: str | Path = ".", client: ChatClient | None = None) -> RefinementSession:
    """A fresh refinement session over the validation chunks (used by run and by the review form)."""
    root = Path(root)
    llm = params.annotate.llm
    p = paths(root)
    keyframes, windows = load_inputs(p["keyframes"], p["windows"])
    chunks = make_chunks(used_keyframes(keyframes, windows), llm.chunk_size)
    prompt_file = resolve_path(root, llm.initial_prompt_file)
    try:
        prompt = prompt_file.read_text()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{prompt_file}: initial prompt not found (annotate.llm.initial_prompt_file)") from err
    return RefinementSession(
        client=client or client_from_params(params),
        cache=ResponseCache(p["cache"]),
        initial_prompt=prompt,
        chunks=select_validation(chunks, llm.validation_sequences),
        root=root,
        max_rounds=llm.max_rounds,
    )


def _captions_from_llm(params: Params, root: Path, used: pd.DataFrame):
    llm = params.annotate.llm
    session = build_session(params, root)
    feedback_file = resolve_path(root, llm.feedback_file)
    entries = load_feedback(feedback_file) if llm.max_rounds > 0 else []
    replay(session, entries)
    client, cache = session.client, session.cache

    chunks = make_chunks(used, llm.chunk_size)
    results: dict[str, ChunkResult] = annotate_chunks(client, cache, session.final_prompt, chunks, root)
    caption_of: dict[str, str | None] = {}
    failed_keyframes: set[str] = set()
    failures = []
    for chunk in chunks:
        result = results[chunk.chunk_id]
        if result.captions is None:
            failed_keyframes.update(chunk.keyframe_ids)
            failures.append(
                {"chunk_id": chunk.chunk_id, "keyframe_ids": list(chunk.keyframe_ids), "error": result.error}
            )
        for i, kf in enumerate(chunk.keyframe_ids):
            caption_of[kf] = result.captions[i] if result.captions is not None else None
    captions = used[["keyframe_id", "uid", "frame", "t"]].copy()
    captions["caption"] = captions["keyframe_id"].map(caption_of)

    history = session.history()
    history.update(
        {
            "feedback_file": str(llm.feedback_file),
            "feedback_sha256": sha256_text(feedback_file.read_text()) if feedback_file.exists() else None,
            "unused_feedback_entries": session.unused_feedback,
            "final_annotation": {"chunks": len(chunks), "failed": failures},
        }
    )
    report = {
        "model": llm.model,
        "chunk_size": llm.chunk_size,
        "chunks": len(chunks),
        "failed_chunks": len(failures),
        "failed_chunk_ids": [f["chunk_id"] for f in failures],
        "requests_sent": client.requests_sent,
        "cache_hits": cache.hits,
        "cache_misses": cache.misses,
        "cache_damaged": cache.corrupt,
        "rounds": len(session.rounds),
        "accepted": session.accepted,
        "stop_reason": session.stop_reason,
        "final_prompt_sha256": sha256_text(session.final_prompt),
    }
    return captions, report, history, failed_keyframes


# --- targets and report ---------------------------------------------------------------------------


def build_targets(
    windows: pd.DataFrame,
    captions: pd.DataFrame,
    *,
    joiner: str,
    dedupe_consecutive: bool,
    qc_max_flagged: float,
    failed_keyframes: set[str] = frozenset(),
) -> pd.DataFrame:
    by_id = captions.set_index("keyframe_id")
    rows = []
    for w in windows.itertuples(index=False):
        ids = _ids(w.target_keyframe_ids)
        # time order from the keyframes' own timestamps, never from list or file order
        ids = sorted(ids, key=lambda k: (by_id.at[k, "t"], by_id.at[k, "frame"])) if ids else ids
        texts = [by_id.at[k, "caption"] for k in ids]
        texts = [t for t in texts if isinstance(t, str) and t]
        if dedupe_consecutive:
            texts = [t for i, t in enumerate(texts) if i == 0 or t != texts[i - 1]]
        n_flagged = int(sum(bool(by_id.at[k, "flagged"]) for k in ids))
        text: str | None = joiner.join(texts) if texts else None
        reason = None
        if not ids:
            reason = "no_target_frames"
        elif failed_keyframes.intersection(ids):
            reason, text = "failed_chunk", None
        elif not texts:
            reason = "no_caption"
        elif n_flagged / len(ids) > qc_max_flagged:
            reason = "qc_flagged"
        rows.append(
            {
                "window_id": str(w.window_id),
                "task": str(w.task),
                "split": str(w.split),
                "target_text": text,
                "n_frames": len(ids),
                "n_flagged": n_flagged,
                "dropped": reason is not None,
                "drop_reason": reason,
            }
        )
    return pd.DataFrame(rows, columns=list(layout.TARGETS.names))


def build_narration_targets(
    windows: pd.DataFrame,
    keyframes: pd.DataFrame,
    index,
    *,
    joiner: str,
    dedupe_consecutive: bool,
    qc_max_flagged: float,
) -> pd.DataFrame:
    """Coarse targets of future windows (Table 20): the cleaned narrations of each window's horizon,
    from t_last (its last observed keyframe's time) to t_end, rows shaped like build_targets'."""
    t_of = dict(zip(keyframes["keyframe_id"].astype(str), keyframes["t"].astype(float), strict=True))
    rows = []
    for w in windows.itertuples(index=False):
        if w.task != "future":
            raise ValueError(f"coarse narration targets are for future windows, not {w.task!r} ({w.window_id})")
        obs = _ids(w.obs_keyframe_ids)
        found = narrations_between(index.by_uid.get(str(w.uid), []), t_of[obs[-1]], float(w.t_end)) if obs else []
        texts = [clean_narration(n.text) for n in found]
        if dedupe_consecutive:
            texts = [t for i, t in enumerate(texts) if i == 0 or t != texts[i - 1]]
        n_flagged = int(sum(bool(qc.flag_caption(clean_narration(n.text), n.text)) for n in found))
        reason = None
        if not found:
            reason = NO_NARRATION
        elif n_flagged / len(found) > qc_max_flagged:
            reason = "qc_flagged"
        rows.append(
            {
                "window_id": str(w.window_id),
                "task": "future",
                "split": str(w.split),
                "target_text": joiner.join(texts) if texts else None,
                "n_frames": len(found),
                "n_flagged": n_flagged,
                "dropped": reason is not None,
                "drop_reason": reason,
            }
        )
    return pd.DataFrame(rows, columns=list(layout.TARGETS.names))


def _length_stats(texts: pd.Series) -> dict[str, float]:
    lengths = np.array([len(qc.words(t)) for t in texts if isinstance(t, str)])
    if not len(lengths):
        return {"n": 0}
    return {
        "n": int(len(lengths)),
        "mean": round(float(lengths.mean()), 3),
        "median": float(np.median(lengths)),
        "min": int(lengths.min()),
        "max": int(lengths.max()),
        "p10": float(np.percentile(lengths, 10)),
        "p90": float(np.percentile(lengths, 90)),
    }


def build_report(source: str, keyframes: pd.DataFrame, captions: pd.DataFrame, targets: pd.DataFrame) -> dict:
    has_caption = captions["caption"].notna()
    kept = targets[~targets["dropped"]]
    by_task = {}
    for task, group in targets.groupby("task", sort=True):
        by_task[str(task)] = {
            "kept": int((~group["dropped"]).sum()),
            "dropped": int(group["dropped"].sum()),
            "kept_by_split": {
                str(s): int(n) for s, n in group[~group["dropped"]]["split"].value_counts().sort_index().items()
            },
        }
    return {
        "source": source,
        "keyframes": {
            "total": int(len(keyframes)),
            "used_by_windows": int(len(captions)),
            "captioned": int(has_caption.sum()),
            "without_caption": int((~has_caption).sum()),
        },
        "flags": qc.count_flags(captions["flags"]),
        "flagged_keyframes": int(captions["flagged"].sum()),
        "windows": {
            "total": int(len(targets)),
            "kept": int(len(kept)),
            "dropped": {r: int((targets["drop_reason"] == r).sum()) for r in DROP_REASONS}
            | (
                {NO_NARRATION: int((targets["drop_reason"] == NO_NARRATION).sum())}
                if (targets["drop_reason"] == NO_NARRATION).any()
                else {}
            ),
            "by_task": by_task,
        },
        "caption_words": _length_stats(captions["caption"]),
        "target_words": _length_stats(kept["target_text"]),
    }


# --- writing --------------------------------------------------------------------------------------


def _write_parquet(df: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
