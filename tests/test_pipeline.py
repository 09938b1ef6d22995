"""The DVC pipeline's shape: every stage runs an existing, output-free notebook through papermill and
declares params that exist in params.yaml."""

import json
import re
from pathlib import Path

import pytest
import yaml

from gazevlm import params as gparams

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _stages():
    for name, stage in DVC["stages"].items():
        yield name, stage.get("do", stage)


def _lookup(key: str):
    node = PARAMS
    for part in key.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("name,stage", list(_stages()))
def test_stage_runs_its_notebook_with_papermill(name, stage):
    cmd = stage["cmd"]
    m = re.match(r"papermill (notebooks/\S+\.ipynb) (reports/notebooks/\S+\.ipynb) -k python3", cmd)
    assert m, f"{name}: {cmd}"
    notebook = ROOT / m.group(1)
    assert notebook.exists(), f"{name}: {notebook} missing"
    assert m.group(1) in stage["deps"], f"{name}: notebook not a dependency"
    assert m.group(2) in [o if isinstance(o, str) else next(iter(o)) for o in stage["outs"]]
    assert "-p params_file params.yaml" in cmd


@pytest.mark.parametrize("name,stage", list(_stages()))
def test_stage_params_exist(name, stage):
    for key in stage.get("params", []):
        if "${item.run}" in key:
            for run in PARAMS["runs"]:
                _lookup(key.replace("${item.run}", run))
        else:
            _lookup(key)


STAGE_NOTEBOOKS = sorted({ROOT / re.search(r"papermill (\S+)", s["cmd"]).group(1) for _, s in _stages()})


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(notebook):
    nb = json.loads(notebook.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
        f"{notebook.name}: strip outputs before committing"
    )


@pytest.mark.parametrize("notebook", STAGE_NOTEBOOKS, ids=lambda p: p.name)
def test_stage_notebooks_have_a_parameters_cell(notebook):
    nb = json.loads(notebook.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, notebook
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
        f"{notebook.name}: strip outputs before committing"
    )
    params_cells = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params_cells) == 1 and "params_file" in "".join(params_cells[0]["source"])
    text = "".join("".join(c["source"]) for c in code)
    assert "params.load(params_file)" in text, f"{notebook.name}: must read params via gazevlm.params"


# modules that read another YAML file and also name params.yaml; each with its reason
OTHER_YAML = {
    "trained.py": "reads dvc.lock (the params DVC recorded), validated through params.from_dict",
}


def test_params_yaml_is_read_only_by_params_module():
    reads_a_yaml_file = re.compile(r"safe_load\([^)]*(open\(|read_text)")
    offenders = [
        p
        for p in (ROOT / "src").rglob("*.py")
        if reads_a_yaml_file.search(p.read_text())
        and "params.yaml" in p.read_text()
        and p.name != "params.py"
        and p.name not in OTHER_YAML
    ]
    assert not offenders
    for name in OTHER_YAML:  # what the exemption allows: only dvc.lock is read there
        text = next((ROOT / "src").rglob(name)).read_text()
        assert re.findall(r"safe_load\((\w+)\.read_text", text) == ["path"] and 'LOCK_FILE = "dvc.lock"' in text


def test_typed_view_accepts_the_committed_file():
    gparams.load(ROOT / "params.yaml")


def test_every_run_trains_with_every_seed_as_a_stage_of_the_dvc_matrix(tmp_path):
    """Issue 13, item 5: base and gaze with at least 3 seeds (lambda0 is Table 14's added run, for the
    15-minute budget), one DVC stage each (DVC's own expansion of dvc.yaml's matrix), each stage passing
    its seed to the notebook and writing apart."""
    import contextlib
    import shutil

    from dvc.repo import Repo

    p = gparams.load(ROOT / "params.yaml")
    assert {"base", "gaze"} <= set(p.runs) and len(p.train.seeds) >= 3
    for name in ("dvc.yaml", "params.yaml"):  # a scratch repository: the project's own stays untouched
        shutil.copy(ROOT / name, tmp_path / name)
    Repo.init(str(tmp_path), no_scm=True).close()
    with contextlib.chdir(tmp_path), Repo(str(tmp_path)) as repo:  # addressing relative to the cwd
        stages = {s.addressing: s for s in repo.index.stages if s.addressing.startswith("train@")}
    expected = {f"train@{r}-{s}": (r, s) for r in p.runs for s in p.train.seeds}
    assert set(stages) == set(expected)
    for name, (run, seed) in expected.items():
        cmd = stages[name].cmd
        assert f"-p run {run} -p seed {seed}" in cmd, cmd
        outs = {str(o.def_path) for o in stages[name].outs}
        assert f"models/{run}/seed{seed}" in outs and f"reports/train/{run}/seed{seed}.json" in outs
    for stage in ("evaluate", "attention", "hallucination"):  # the pooling stages rerun when seeds change
        assert "train.seeds" in DVC["stages"][stage]["params"], stage
