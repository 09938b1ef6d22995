from pathlib import Path

import pytest

from gazevlm import params

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_parse_and_match_defaults():
    p = params.load(ROOT / "params.yaml")
    assert p.heatmaps.sigma_px == 20 and p.heatmaps.delta_ms == 200
    assert p.heatmaps.eps_px == 20 and p.heatmaps.eta == 0.6
    assert set(p.runs) >= {"base", "lambda0", "gaze"}
    assert p.run("gaze").lam == 100 and p.run("gaze").block
    assert not p.run("base").block
    # the defaults in code mirror the committed file, so a test built from defaults is the real setup
    assert params.Params().heatmaps == p.heatmaps
    assert params.Params().model == p.model


def test_runs_differ_only_by_their_switches():
    p = params.load(ROOT / "params.yaml")
    fields = {name: vars(run) for name, run in p.runs.items()}
    assert fields["base"]["block"] is False and fields["lambda0"]["lam"] == 0


def test_unknown_key_is_an_error(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(params.ParamsError, match="lrr"):
        params.load(f)


def test_missing_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(params.ParamsError, match="not found"):
        params.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(params.ParamsError, match="bad.yaml"):
        params.load(bad)


def test_unknown_run_names_the_run():
    with pytest.raises(KeyError, match="nosuch"):
        params.Params().run("nosuch")


def test_overrides_keep_other_keys():
    p = params.with_overrides(params.Params(), train={"lr": 1.0})
    assert p.train.lr == 1.0 and p.train.batch_size == params.Params().train.batch_size
