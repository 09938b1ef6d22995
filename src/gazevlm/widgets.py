"""The gaze-vs-attention explorer: an ipywidgets app over the attention stage's outputs only.

    from gazevlm.widgets import Explorer
    Explorer()          # finds data/attention/ in the working directory or one of its parents

Pick run(s), task, window and frame; show the human gaze heatmap, the model's attention, or both; read
the predicted and reference text and the window's metrics. Files are read once per task and every
redraw is a PIL composite of one small frame per run, so it stays interactive on large test splits.
"""

from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path

import ipywidgets as W
import numpy as np

from gazevlm import layout
from gazevlm.attention import outputs, render
from gazevlm.attention.saliency import METRICS, support, topk_indices

SOURCE_CHOICES = (("run's own", "primary"), ("gaze block", "block"), ("Perceiver", "perceiver"))
LAYER_CHOICES = (("gaze heatmap", "gaze"), ("attention", "attention"), ("both", "both"))


def find_attention_dir(start: str | Path | None = None) -> Path:
    """`start` if given, else the first data/attention/ with an index.json in the cwd or a parent."""
    if start is not None:
        path = Path(start)
        outputs.read_index(path)  # fail now, naming the file, if it is not a stage output
        return path
    here = Path.cwd().resolve()
    for base in (here, *here.parents):
        candidate = base / layout.ATTENTION_DIR
        if outputs.index_file(candidate).exists():
            return candidate
    raise FileNotFoundError(
        f"no {layout.ATTENTION_DIR / outputs.INDEX_NAME} in {here} or its parents: "
        "run the `attention` stage (dvc repro) or pass attention_dir"
    )


class Explorer:
    """The app; `.widget` is the ipywidgets tree, and the object displays as it in a notebook."""

    def __init__(self, attention_dir: str | Path | None = None, width: int = 256):
        self.root = find_attention_dir(attention_dir)
        self.index = outputs.read_index(self.root)
        if not self.index["tasks"]:
            raise ValueError(f"{outputs.index_file(self.root)} lists no tasks")
        self.width = width
        self.threshold = float(self.index["support_threshold"])
        self._read_frames = lru_cache(maxsize=None)(self._load_frames)
        self._read_run = lru_cache(maxsize=None)(self._load_run)

        self.task = W.Dropdown(options=list(self.index["tasks"]), description="task")
        self.runs = W.SelectMultiple(description="runs", rows=3)
        self.window = W.Dropdown(description="window", layout=W.Layout(width="420px"))
        self.prev_button = W.Button(description="◀", layout=W.Layout(width="36px"), tooltip="previous window")
        self.next_button = W.Button(description="▶", layout=W.Layout(width="36px"), tooltip="next window")
        self.frame = W.IntSlider(description="frame", min=0, max=0, continuous_update=False)
        self.layer = W.ToggleButtons(options=LAYER_CHOICES, value="both", description="show")
        self.source = W.ToggleButtons(
            options=SOURCE_CHOICES,
            value="primary",
            description="attention",
            tooltips=[
                "the gaze block where the run has one, else the Perceiver",
                "the gaze block's last-layer attention",
                "the Perceiver's latent-to-patch attention",
            ],
        )
        self.show_topk = W.Checkbox(
            value=False, description="outline top-k attended patches", indent=False, layout=W.Layout(width="auto")
        )
        self.panels = W.HBox()
        self.info = W.HTML()
        self._images: list[W.Image] = []
        self._titles: list[W.HTML] = []
        self._busy = False

        self.widget = W.VBox(
            [
                W.HBox([self.task, self.runs]),
                W.HBox([self.window, self.prev_button, self.next_button, self.frame]),
                self.layer,
                W.HBox([self.source, self.show_topk]),
                self.panels,
                self.info,
            ]
        )
        self.task.observe(self._on_task, names="value")
        self.runs.observe(self._on_runs, names="value")
        for control in (self.window, self.frame, self.layer, self.source, self.show_topk):
            control.observe(self._on_view, names="value")
        self.prev_button.on_click(lambda _: self._step(-1))
        self.next_button.on_click(lambda _: self._step(1))
        self._on_task()

    # --- data ----------------------------------------------------------------------------------------
    def _load_frames(self, task: str) -> outputs.TaskFrames:
        return outputs.read_task_frames(self.root / self.index["tasks"][task]["frames"])

    def _load_run(self, run: str, task: str) -> tuple[outputs.RunAttention, dict[str, int]]:
        r = outputs.read_run_attention(self.root / self.index["tasks"][task]["runs"][run])
        return r, {w: i for i, w in enumerate(r.window_ids.tolist())}

    # --- callbacks -----------------------------------------------------------------------------------
    def _on_task(self, change=None) -> None:
        self._busy = True
        try:
            task = self.task.value
            frames = self._read_frames(task)
            runs = list(self.index["tasks"][task]["runs"])
            self.runs.options = runs
            self.runs.value = tuple(runs)
            self.window.options = frames.window_ids.tolist()
            self.window.value = self.window.options[0] if self.window.options else None
            self.frame.max = frames.n_frames - 1
            self.frame.value = frames.n_frames - 1  # the last observed frame carries the cue
            self._build_panels()
        finally:
            self._busy = False
        self.refresh()

    def _on_runs(self, change=None) -> None:
        if self._busy:
            return
        self._build_panels()
        self.refresh()

    def _on_view(self, change=None) -> None:
        if not self._busy:
            self.refresh()

    def _step(self, delta: int) -> None:
        options = list(self.window.options)
        if options:
            self.window.value = options[(options.index(self.window.value) + delta) % len(options)]

    def _build_panels(self) -> None:
        self._titles = [W.HTML() for _ in self.runs.value]
        self._images = [W.Image(format="png", width=self.width) for _ in self.runs.value]
        self.panels.children = [W.VBox([t, i]) for t, i in zip(self._titles, self._images, strict=False)]

    # --- drawing -------------------------------------------------------------------------------------
    def _source_for(self, r: outputs.RunAttention) -> str | None:
        wanted = self.source.value
        if wanted == "primary":
            return r.primary_source() if r.sources else None
        return wanted if wanted in r.sources else None

    def refresh(self) -> None:
        """Redraw every panel and the text for the current selection."""
        task, wid, t = self.task.value, self.window.value, self.frame.value
        if wid is None:
            self.info.value = "<i>no test windows</i>"
            return
        frames = self._read_frames(task)
        i = frames.row(wid)
        gh, gw = frames.grid
        image = render.decode_jpeg(frames.jpeg(i, t))
        heat = frames.heatmaps[i, t].astype(np.float32) if frames.valid[i, t] else None
        gaze_support = (
            support(frames.gaze[i, t][None], self.threshold)[0].reshape(gh, gw) if frames.valid[i, t] else None
        )
        rows = []
        for run, title, img in zip(self.runs.value, self._titles, self._images, strict=False):
            r, where = self._read_run(run, task)
            source = self._source_for(r)
            j = where.get(wid)
            att = r.maps[source][j, t] if (source is not None and j is not None) else None
            topk = None
            if att is not None and self.show_topk.value:
                topk = np.zeros(gh * gw, bool)
                topk[topk_indices(att[None], r.topk)[0]] = True
                topk = topk.reshape(gh, gw)
            img.value = render.to_png(
                render.overlay(
                    image,
                    mode=self.layer.value,
                    gaze_heatmap=heat,
                    attention=None if att is None else att.reshape(gh, gw),
                    gaze_support=gaze_support,
                    topk=topk,
                    width=self.width,
                )
            )
            note = source if att is not None else ("not in this run" if j is None else "no such attention")
            title.value = f"<b>{html.escape(run)}</b> <small>({html.escape(note)})</small>"
            rows.append((run, r, source, j))
        self.info.value = self._describe(frames, i, t, rows)

    def _describe(self, frames: outputs.TaskFrames, i: int, t: int, rows: list) -> str:
        wid = frames.window_ids[i]
        when = frames.timestamps[i, t]
        head = (
            f"<b>{html.escape(str(wid))}</b> &middot; video {html.escape(str(frames.uids[i]))} &middot; "
            f"frame {t + 1}/{frames.n_frames} (video frame {frames.frame_index[i, t]}, "
            f"{when:.2f} s) &middot; gaze {'present' if frames.valid[i, t] else '<b>missing</b>'}"
            f" &middot; models of training seed {self.index['seed']}"
        )
        reference = next((r.reference[j] for _, r, _, j in rows if j is not None and r.reference[j]), "")
        text = [f"<tr><td><i>reference</i></td><td colspan=2>{html.escape(reference) or '&mdash;'}</td></tr>"]
        cells = ["<th>run</th><th>source</th>"] + [f"<th>{m}</th>" for m in METRICS]
        table = [f"<tr>{''.join(cells)}</tr>"]
        for run, r, source, j in rows:
            if j is None:
                text.append(f"<tr><td>{html.escape(run)}</td><td colspan=2><i>window not scored</i></td></tr>")
                continue
            sem = r.semantic[j]
            sem_txt = "" if np.isnan(sem) else f" <small>(semantic {sem:.3f})</small>"
            text.append(
                f"<tr><td>{html.escape(run)}</td><td>{html.escape(r.prediction[j]) or '&mdash;'}{sem_txt}</td></tr>"
            )
            if source is None:
                continue
            m = r.metrics[source]
            window_mean = [np.nanmean(m[k][j]) if np.isfinite(m[k][j]).any() else np.nan for k in METRICS]
            frame_val = [m[k][j, t] for k in METRICS]
            fmt = lambda v: "&mdash;" if not np.isfinite(v) else f"{v:.3f}"  # noqa: E731
            table.append(
                f"<tr><td>{html.escape(run)}</td><td>{source} window</td>"
                + "".join(f"<td>{fmt(v)}</td>" for v in window_mean)
                + "</tr>"
            )
            table.append(
                "<tr><td></td><td>this frame</td>" + "".join(f"<td>{fmt(v)}</td>" for v in frame_val) + "</tr>"
            )
        style = "style='border-collapse:collapse;font-size:12px' cellpadding=3"
        return (
            f"<div>{head}</div><table {style}>{''.join(text)}</table>"
            f"<div><small>top-k = top-{self.index['topk']} overlap; gaze support: patches above "
            f"{self.threshold:g} of the peak gaze mass</small></div><table {style}>{''.join(table)}</table>"
        )

    # --- for tests and the notebook ------------------------------------------------------------------
    def image_values(self) -> list[bytes]:
        return [img.value for img in self._images]

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
