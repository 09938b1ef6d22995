from pathlib import Path

import pytest

from gazevlm import params

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_parse_and_match_defaults():
    p = params.load(ROOT / "params.yaml")
    assert p.heatmaps.sigma_px == 20 and p.heatmaps.delta_ms == 200
    assert p.heatmaps.eps_px == 20 and p.heatmaps.eta == 0.6
    # the default trains base and gaze; lambda0 is the Table 14 ablation's added run
    assert p.runs == {"base": params.RunParams(block=False, lam=0.0), "gaze": params.RunParams(block=True, lam=100.0)}
    # the defaults in code mirror the committed file, so a test built from defaults is the real setup
    assert params.Params().heatmaps == p.heatmaps
    assert params.Params().model == p.model


def test_runs_differ_only_by_their_switches():
    p = params.load(ROOT / "params.yaml")
    base, gaze = (vars(p.run(name)) for name in ("base", "gaze"))
    assert {k for k in base if base[k] != gaze[k]} == {"block", "lam"}


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


# --- types, ranges and choices: checked here, once, when params.yaml is read (issue 15, item 1) --------


def _dvc_written(tmp_path: Path, *overrides: str) -> Path:
    """The committed params.yaml after DVC's own `exp run -S` writer applied `overrides` to it."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    apply_overrides(path, list(overrides))
    return path


def test_dvc_set_param_lr_is_read_as_a_number(tmp_path):
    import torch
    import yaml

    path = _dvc_written(tmp_path, "train.lr=7e-5", "train.batch_size=32", "runs.base.block=false")
    assert "lr: 7e-05" in path.read_text()  # what DVC writes ...
    assert yaml.safe_load(path.read_text())["train"]["lr"] == "7e-05"  # ... and YAML 1.1 reads as a string
    p = params.load(path)
    assert isinstance(p.train.lr, float) and p.train.lr == 7e-5
    assert p.train.batch_size == 32 and p.run("base").block is False
    # what failed deep in the training subprocess: AdamW compares lr with 0
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=p.train.lr)


def test_train_cli_set_override_is_coerced_too():
    from gazevlm import train

    overrides = train.parse_overrides(["train.lr=7e-5", "train.epochs=2"])
    p = params.with_overrides(params.Params(), **overrides)
    assert p.train.lr == 7e-5 and isinstance(p.train.lr, float) and p.train.epochs == 2


@pytest.mark.parametrize(
    "yaml_text,key,allowed",
    [
        ("train:\n  batch_size: sixteen\n", "train.batch_size = 'sixteen'", "expected an integer"),
        ("train:\n  lr: abc\n", "train.lr = 'abc'", "expected a number"),
        ("train:\n  epochs: 2.5\n", "train.epochs = 2.5", "expected an integer"),
        ("runs:\n  gaze: {block: true, lambda: -100}\n", "runs.gaze.lambda = -100", "must be >= 0"),
        ('runs:\n  base: {block: "false", lambda: 0}\n', "runs.base.block = 'false'", "expected true or false"),
        ("runs:\n  odd: {block: false, lambda: 1}\n", "runs.odd.lambda = 1", "needs block: true"),
        ("train:\n  schedule: linear\n", "train.schedule = 'linear'", r"expected one of \['constant', 'cosine'\]"),
        ("train:\n  tasks: [future, futur]\n", "train.tasks", "distinct tasks from"),
        ("model:\n  query: frames\n", "model.query = 'frames'", "expected one of"),
        ("heatmaps:\n  eta: 1.5\n", "heatmaps.eta = 1.5", r"must be in \[0, 1\]"),
        ("heatmaps:\n  sigma_px: .nan\n", "heatmaps.sigma_px = nan", "finite"),
        ("annotate:\n  llm: {timeout_s: 0}\n", "annotate.llm.timeout_s = 0", "must be > 0"),
        ("annotate:\n  source: gpt\n", "annotate.source = 'gpt'", "expected one of"),
        ("extract:\n  split_fractions: {train: 0.5, val: 0.2}\n", "extract.split_fractions", "sum to 1"),
        ("data:\n  root: 3\n", "data.root = 3", "expected a string"),
        ("train: 3\n", "train = 3", "expected a mapping"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(tmp_path, yaml_text, key, allowed):
    f = tmp_path / "params.yaml"
    f.write_text(yaml_text)
    with pytest.raises(params.ParamsError, match=rf"params\.yaml: {key}.*{allowed}"):
        params.load(f)


def test_numeric_strings_are_coerced_and_the_rest_is_not():
    p = params.from_dict(
        {"train": {"lr": "1e-3", "batch_size": "8", "epochs": 3.0}, "heatmaps": {"sigma_px": 50, "raft_weights": None}}
    )
    assert p.train.lr == 1e-3 and p.train.batch_size == 8 and isinstance(p.train.epochs, int)
    assert p.heatmaps.sigma_px == 50.0 and isinstance(p.heatmaps.sigma_px, float)
    with pytest.raises(params.ParamsError, match="expected a number"):
        params.from_dict({"train": {"lr": True}})


def test_params_built_in_code_are_checked_the_same_way():
    import dataclasses

    bad = dataclasses.replace(params.Params(), runs={"odd": params.RunParams(block=False, lam=1.0)})
    with pytest.raises(params.ParamsError, match="runs.odd.lambda = 1.0: lambda > 0 needs block: true"):
        params.validate(bad)
    with pytest.raises(params.ParamsError, match="train.lr = -1"):
        params.with_overrides(params.Params(), train={"lr": -1})
    assert params.validate(params.Params()) == params.Params()


def test_choice_lists_agree_with_the_modules_that_use_them():
    from gazevlm import layout, losses
    from gazevlm.heatmaps import flow
    from gazevlm.models import gaze_block, presets

    assert params.BACKBONES == presets.BACKBONES
    assert (params.QUERIES, params.BLOCK_OUTPUTS, params.HEAD_REDUCTIONS) == (
        gaze_block.QUERIES,
        gaze_block.OUTPUTS,
        gaze_block.HEAD_REDUCTIONS,
    )
    assert (params.KL_DIRECTIONS, params.KL_REDUCTIONS) == (losses.DIRECTIONS, losses.REDUCTIONS)
    assert params.FLOW_BACKENDS == flow.FLOW_BACKENDS
    assert (params.TASKS, params.SPLITS) == (layout.TASKS, layout.SPLITS)


def _stage_notebooks() -> list[Path]:
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
    return sorted({ROOT / s.get("do", s)["cmd"].split()[1] for s in stages})


@pytest.mark.parametrize("notebook", _stage_notebooks(), ids=lambda p: p.name)
def test_a_bad_value_fails_in_the_notebooks_first_cell(notebook, tmp_path, monkeypatch):
    """Run the notebook's cells in order with a params.yaml that has one bad value: the cell that reads
    it (the first after the parameters and set-up) must raise, naming the key; nothing runs before."""
    import json

    bad = _dvc_written(tmp_path, "train.batch_size=sixteen")
    monkeypatch.chdir(tmp_path)
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    namespace: dict = {"params_file": str(bad)}
    for i, cell in enumerate(cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        source = "\n".join(line for line in "".join(cell["source"]).splitlines() if not line.startswith("%"))
        if "params.load(params_file)" not in source:
            assert i <= 2, f"{notebook.name}: cell {i} runs before params are read"
            exec(compile(source, f"{notebook.name}[{i}]", "exec"), namespace)
            continue
        with pytest.raises(params.ParamsError, match=r"train\.batch_size = 'sixteen': expected an integer"):
            exec(compile(source, f"{notebook.name}[{i}]", "exec"), namespace)
        return
    pytest.fail(f"{notebook.name}: no cell reads params_file")
