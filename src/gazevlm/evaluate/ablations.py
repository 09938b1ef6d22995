"""Tables of the paper's ablations, built from DVC experiments.

ablations.mk queues one `dvc exp run` per variant (named <table>-<variant>, e.g. t9-single-s50), runs
the queue, saves `dvc exp show --json` and calls

    python -m gazevlm.evaluate.ablations <table> <exp_show.json> <exp name>... [--out reports/ablations]

which reads each experiment's params and its metrics/eval/<run>_<task>.json from that JSON and writes
reports/ablations/<table>.{md,csv}: one row per variant (labelled by the params that vary), our
mean [95% CI] per run/task/metric, and the paper's numbers for the same variant in a separate group.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gazevlm.evaluate import tables

ABLATIONS_DIR = Path("reports/ablations")


@dataclass(frozen=True)
class Ablation:
    name: str
    title: str
    vary: tuple[str, ...]  # params.yaml keys that label the rows (dotted paths)
    columns: tuple[tuple[str, str, str], ...]  # (run, task, metric) shown per row
    paper: Mapping[tuple, Mapping[str, float]] = field(default_factory=dict)  # row key -> {column: value}
    rows_by: str = "experiment"  # "experiment" | "run" (one experiment, one row per run)
    paper_label: str = "paper Ego4D OpenFlamingo"  # the paper's ablations are on OpenFlamingo only
    # (task, metric): add the paired gaze - base gain [CI], p of each experiment (metrics/eval/comparisons.json);
    # with rows_by="run", each row's run - base
    gains: tuple[tuple[str, str], ...] = ()
    # rows_by="run": the runs shown, in this order (empty: every run of the experiment)
    runs: tuple[str, ...] = ()


def _col(run: str, task: str, metric: str) -> str:
    return f"{run} {task} {metric}"


_GF = (("gaze", "future", "semantic"), ("gaze", "future", "rouge_l"))
_T1 = tuple((run, task, "semantic") for task in ("future", "activity") for run in ("base", "gaze"))


_RUN_FUTURE = (("{run}", "future", "semantic"), ("{run}", "future", "rouge_l"))
_BASE_GAZE_FUTURE = {
    ("base",): {"future semantic": 0.6525, "future rouge_l": 0.4318},
    ("gaze",): {"future semantic": 0.7505, "future rouge_l": 0.5173},
}
_A18 = (
    ("base", "activity", "semantic"),
    ("base", "activity", "rouge_l"),
    ("gaze", "activity", "semantic"),
    ("gaze", "activity", "rouge_l"),
)
_PATCH = (
    ("base", "future", "object_accuracy"),
    ("gaze", "future", "object_accuracy"),
    ("base", "future", "semantic"),
    ("gaze", "future", "semantic"),
)
_F20 = (
    ("base", "future", "semantic"),
    ("base", "future", "rouge_l"),
    ("gaze", "future", "semantic"),
    ("gaze", "future", "rouge_l"),
)


def _table1_paper() -> dict[tuple, dict[str, float]]:
    """Table 1 by our backbone names: (backbone,) -> {"<run> <task> semantic": value}."""
    out = {}
    for ours, theirs in tables.PAPER_BACKBONE.items():
        per_task = tables.PAPER_TABLE1[theirs]
        out[(ours,)] = {
            _col(run, task, "semantic"): per_task[task][i]
            for task in per_task
            for i, run in enumerate(("base", "gaze"))
        }
    return out


ABLATIONS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation(
            "table1",
            "Table 1: base vs gaze-regularised (lambda 100) on each backbone, semantic score",
            ("model.backbone",),
            _T1,
            _table1_paper(),
            paper_label="paper Ego4D (same backbone)",
            gains=(("future", "semantic"), ("activity", "semantic")),
        ),
        Ablation(
            "table2",
            "Table 2: gaze-loss weight lambda (run `gaze`), both tasks",
            ("runs.gaze.lambda",),
            (("gaze", "future", "semantic"), ("gaze", "activity", "semantic")),
            {
                (0,): {_col("gaze", "future", "semantic"): 0.6317, _col("gaze", "activity", "semantic"): 0.6917},
                (100,): {_col("gaze", "future", "semantic"): 0.7505, _col("gaze", "activity", "semantic"): 0.7848},
                (1000,): {_col("gaze", "future", "semantic"): 0.7354, _col("gaze", "activity", "semantic"): 0.7721},
            },
        ),
        Ablation(
            "table3",
            "Table 3: anticipation horizon tau_a (future task), base and gaze",
            ("extract.future_horizon_s",),
            (("base", "future", "semantic"), ("gaze", "future", "semantic")),
            {
                (2,): {_col("base", "future", "semantic"): 0.6525, _col("gaze", "future", "semantic"): 0.7505},
                (5,): {_col("base", "future", "semantic"): 0.6297, _col("gaze", "future", "semantic"): 0.7315},
            },
        ),
        Ablation(
            "table9",
            "Table 9: single-point vs aggregated heatmaps, sigma 20 vs 50 px (future task)",
            ("heatmaps.aggregate", "heatmaps.sigma_px"),
            _GF,
            {
                (False, 20): {_col(*_GF[0]): 0.6211, _col(*_GF[1]): 0.4327},
                (False, 50): {_col(*_GF[0]): 0.6512, _col(*_GF[1]): 0.4463},
                (True, 20): {_col(*_GF[0]): 0.7505, _col(*_GF[1]): 0.5173},
                (True, 50): {_col(*_GF[0]): 0.7436, _col(*_GF[1]): 0.5034},
            },
        ),
        Ablation(
            "table11",
            "Table 11: aggregation window delta 200 ms (6 points) vs 400 ms (12 points), future task",
            ("heatmaps.delta_ms",),
            _GF,
            {
                (200,): {_col(*_GF[0]): 0.7505, _col(*_GF[1]): 0.5173},
                (400,): {_col(*_GF[0]): 0.7398, _col(*_GF[1]): 0.4971},
            },
        ),
        Ablation(
            "table12",
            "Table 12: occlusion filter off vs on (future task)",
            ("heatmaps.occlusion_filter",),
            _GF,
            {
                (False,): {_col(*_GF[0]): 0.7298, _col(*_GF[1]): 0.48},
                (True,): {_col(*_GF[0]): 0.7505, _col(*_GF[1]): 0.5173},
            },
        ),
        Ablation(
            "table14",
            "Table 14: base, base + attention block without gaze loss (lambda0), gaze (future task)",
            (),
            (("{run}", "future", "semantic"), ("{run}", "future", "rouge_l")),
            {
                ("base",): {"future semantic": 0.6525, "future rouge_l": 0.4318},
                ("lambda0",): {"future semantic": 0.6701, "future rouge_l": 0.4393},
                ("gaze",): {"future semantic": 0.7505, "future rouge_l": 0.5173},
            },
            rows_by="run",
        ),
        Ablation(
            "table19",
            "Table 19: global vs frame-level query (future task)",
            ("model.query",),
            _GF,
            {("global",): {_col(*_GF[0]): 0.7505}, ("frame",): {_col(*_GF[0]): 0.7284}},
        ),
        Ablation(
            "table13",
            "Table 13: gaze given to the base model as text coordinates in the prompt (run `gaze_text`, "
            "train and test) vs base and the gaze-regularised model (future task)",
            (),
            _RUN_FUTURE,
            {**_BASE_GAZE_FUTURE, ("gaze_text",): {"future semantic": 0.7021, "future rouge_l": 0.463}},
            rows_by="run",
            runs=("base", "gaze_text", "gaze"),
            gains=(("future", "semantic"),),
        ),
        Ablation(
            "table15",
            "Table 15: base model trained and tested on frames with the gaze heatmap overlaid (run "
            "`gaze_overlay`) vs base and the gaze-regularised model (future task)",
            (),
            _RUN_FUTURE,
            {**_BASE_GAZE_FUTURE, ("gaze_overlay",): {"future semantic": 0.6873, "future rouge_l": 0.4435}},
            rows_by="run",
            runs=("base", "gaze_overlay", "gaze"),
            gains=(("future", "semantic"),),
        ),
        Ablation(
            "table18",
            "Table 18: activity task from a single static frame (activity_observe_s 1: one keyframe, "
            "the last observed) vs the 3-frame window, base and gaze",
            ("extract.activity_observe_s",),
            _A18,
            {
                (1,): {_col(*_A18[0]): 0.6897, _col(*_A18[1]): 0.4432, _col(*_A18[2]): 0.7014, _col(*_A18[3]): 0.4611},
                (3,): {_col(*_A18[0]): 0.7176, _col(*_A18[2]): 0.7848},
            },
            gains=(("activity", "semantic"),),
        ),
        Ablation(
            "patch_layers",
            "Not a paper table: trainable transformer layers over each frame's patches, first in the gaze block "
            "(model.block_patch_layers; 0 is the paper's block), base and gaze, future task",
            ("model.block_patch_layers",),
            _PATCH,
            {},
            gains=(("future", "object_accuracy"), ("future", "semantic")),
        ),
        Ablation(
            "table20",
            "Table 20: future targets from the horizon's raw narrations (coarse) vs the target "
            "keyframes' captions (fine), base and gaze",
            ("annotate.future_targets",),
            _F20,
            {
                ("narrations",): {
                    _col(*_F20[0]): 0.7232,
                    _col(*_F20[1]): 0.4982,
                    _col(*_F20[2]): 0.7621,
                    _col(*_F20[3]): 0.52,
                },
                ("captions",): {
                    _col(*_F20[0]): 0.6525,
                    _col(*_F20[1]): 0.4318,
                    _col(*_F20[2]): 0.7505,
                    _col(*_F20[3]): 0.5173,
                },
            },
            gains=(("future", "semantic"),),
        ),
    )
}


@dataclass(frozen=True)
class Experiment:
    name: str
    rev: str
    timestamp: str
    params: Mapping[str, Any]
    metrics: Mapping[str, Mapping[str, Any]]  # metrics file path -> its data
    error: str | None = None  # DVC's message for a failed experiment


def parse_exp_show(data: Sequence[Mapping]) -> dict[str, Experiment]:
    """Experiments by name from `dvc exp show --json` (DVC 3). A name seen more than once (several
    baselines) keeps the newest; the workspace and baseline commits are kept under their own names."""
    found: dict[str, Experiment] = {}

    def add(name: str | None, node: Mapping) -> None:
        d = node.get("data") or {}
        if not name or not d:
            return
        exp = Experiment(
            name=name,
            rev=str(d.get("rev") or node.get("rev")),
            timestamp=str(d.get("timestamp") or ""),
            params=((d.get("params") or {}).get("params.yaml") or {}).get("data") or {},
            metrics={p: (m or {}).get("data") or {} for p, m in (d.get("metrics") or {}).items()},
            error=(node.get("error") or {}).get("msg") if node.get("error") else None,
        )
        if name not in found or exp.timestamp >= found[name].timestamp:
            found[name] = exp

    for baseline in data:
        add(baseline.get("name") or baseline.get("rev"), baseline)
        for group in baseline.get("experiments") or []:
            for rev in group.get("revs") or []:
                add(rev.get("name") or rev.get("rev"), rev)
    return found


def get_param(params: Mapping[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _estimate(exp: Experiment, run: str, task: str, metric: str) -> Mapping | None:
    rec = exp.metrics.get(f"metrics/eval/{run}_{task}.json") or {}
    return rec.get(metric)


def _gain(exp: Experiment, task: str, metric: str, pair: str = "gaze_vs_base") -> Mapping | None:
    rec = exp.metrics.get("metrics/eval/comparisons.json") or {}
    return ((rec.get(task) or {}).get(pair) or {}).get(metric)


def ablation_table(
    spec: Ablation, experiments: Mapping[str, Experiment], names: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(numbers, display, missing experiment names) for one ablation. An experiment that failed, or
    that has no metrics/eval/*.json, counts as missing."""
    usable = {
        n: e for n, e in experiments.items() if not e.error and any(p.startswith("metrics/eval/") for p in e.metrics)
    }
    missing = [n for n in names if n not in usable]
    rows_num, rows_disp = [], []
    for name in names:
        exp = usable.get(name)
        why = (
            ""
            if exp
            else (f" ({experiments[name].error or 'no metrics'})" if name in experiments else " (not found: not run)")
        )
        if spec.rows_by == "run":
            run_names = list(spec.runs or (get_param(exp.params, "runs") or {})) if exp else []
            units = [(name, exp, r, (r,)) for r in run_names] or [(name, exp, None, ())]
        else:
            key = tuple(get_param(exp.params, k) for k in spec.vary) if exp else ()
            units = [(name, exp, None, key)]
        for exp_name, e, run, key in units:
            num: dict = {"experiment": exp_name}
            disp: dict = {"experiment": exp_name + why}
            for k, v in zip(spec.vary, key, strict=False):
                num[k] = v
                disp[k] = v
            if run is not None:
                num["run"] = disp["run"] = run
            for r, task, metric in spec.columns:
                r = r.format(run=run) if run else r
                col = f"{task} {metric}" if spec.rows_by == "run" else _col(r, task, metric)
                est = _estimate(e, r, task, metric) if e else None
                num[col] = tables._nan((est or {}).get("mean"))
                num[col + " ci_low"] = tables._nan((est or {}).get("ci_low"))
                num[col + " ci_high"] = tables._nan((est or {}).get("ci_high"))
                disp["ours: " + col] = tables.fmt_estimate(est)
            for task, metric in spec.gains:
                pair = f"{run}_vs_base" if run is not None else "gaze_vs_base"
                cmp = _gain(e, task, metric, pair) if e and run != "base" else None
                col = f"gain {task} {metric}"
                num[col] = tables._nan((cmp or {}).get("diff"))
                num[col + " p"] = tables._nan((cmp or {}).get("p_value"))
                who = "run" if run is not None else "gaze"
                disp[f"ours: {who} - base {task} {metric}"] = tables.fmt_gain(cmp)
            paper = _lookup_paper(spec, key)
            for r, task, metric in spec.columns:
                col = f"{task} {metric}" if spec.rows_by == "run" else _col(r, task, metric)
                v = paper.get(col)
                num["paper " + col] = tables._nan(v)
                disp[f"{spec.paper_label}: " + col] = tables.fmt_value(v, 4)
            rows_num.append(num)
            rows_disp.append(disp)
    return pd.DataFrame(rows_num), pd.DataFrame(rows_disp), missing


def _lookup_paper(spec: Ablation, key: tuple) -> Mapping[str, float]:
    for pkey, values in spec.paper.items():
        if len(pkey) == len(key) and all(_same(a, b) for a, b in zip(pkey, key, strict=False)):
            return values
    return {}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def build(table: str, exp_show: Path, names: Sequence[str], out_dir: Path = ABLATIONS_DIR) -> list[Path]:
    if table not in ABLATIONS:
        raise KeyError(f"unknown ablation {table!r}; known: {sorted(ABLATIONS)}")
    spec = ABLATIONS[table]
    try:
        data = json.loads(Path(exp_show).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{exp_show}: not readable `dvc exp show --json` output: {err}") from err
    experiments = parse_exp_show(data)
    numbers, display, missing = ablation_table(spec, experiments, names)
    if len(missing) == len(names):
        raise ValueError(f"{exp_show}: none of the experiments {list(names)} found")
    caption = (
        f"{spec.title}. Ours: semantic score / ROUGE-L F of generated text, mean [95% bootstrap CI], one "
        f"DVC experiment per row ({exp_show}). Paper: {tables.PAPER_SOURCE}, for reference "
        f"(columns '{spec.paper_label}')."
    )
    if spec.gains:
        who = "the row's run" if spec.rows_by == "run" else "gaze"
        caption += (
            f" Gain: {who} - base on the same test windows [95% paired bootstrap CI], p from a paired "
            "sign-flip permutation test."
        )
    if missing:
        caption += f" Missing experiments: {', '.join(missing)}."
    return tables.write_table(numbers, display, Path(out_dir) / table, caption)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", choices=sorted(ABLATIONS))
    ap.add_argument("exp_show", type=Path, help="output of `dvc exp show --json`")
    ap.add_argument("names", nargs="+", help="experiment names, one row each (in this order)")
    ap.add_argument("--out", type=Path, default=ABLATIONS_DIR)
    args = ap.parse_args(argv)
    paths = build(args.table, args.exp_show, args.names, args.out)
    print("\n".join(str(p) for p in paths))
    md = paths[-1].read_text()
    print(md)
    return 1 if "Missing experiments" in md else 0


if __name__ == "__main__":
    sys.exit(main())
