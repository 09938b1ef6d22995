"""Notebook 03's figures and tables build from the stage's outputs (smoke test on the tiny world)."""

import matplotlib

matplotlib.use("Agg")

from gazevlm import params as P  # noqa: E402
from gazevlm.heatmaps import figures, stage  # noqa: E402
from heatmaps_fixtures import make_world  # noqa: E402


def test_figures_and_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_world(tmp_path, occlude={"vid_b": [66]}, invalid={"vid_c": list(range(30, 41))})
    p = P.with_overrides(
        P.from_dict({}),
        heatmaps={"eps_px": 2, "eta": 0.35, "flow_scale": 1.0, "heatmap_size": 16, "reference_width": 160},
    )
    report = stage.run(p)
    counts = figures.gaze_counts_table(report)
    assert counts.loc["test", "invalid"] == 11 and counts.loc["test", "keyframes without gaze"] == 1
    fate = figures.frame_fate_table()
    assert fate.loc["val", "occluded"] == 1
    assert figures.summary_table(report).loc[("future", "train"), "windows"] == 1
    assert "total" in figures.timings_table(report).index
    for fig in (
        figures.gaze_counts_plot(report),
        figures.single_vs_aggregated(p, n=2),
        figures.occluded_examples(p),
        figures.patch_targets("future", "test", n=1),
    ):
        assert fig.axes
        path = figures.save(fig, "x", tmp_path / "figs")
        assert path.stat().st_size > 1000
