"""The table contracts in gazevlm.layout: what each writer writes is its declared schema, byte for byte
what plain pandas writes for the same values, and read_table refuses a file that breaks its contract."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ego4d_fixtures import tiny_params, tiny_world  # noqa: F401
from evaluate_fixtures import make_tokenizer
from gazevlm import ego4d, extract, layout, predict, sample
from gazevlm import params as gparams
from gazevlm.annotate import stage as annotate
from gazevlm.attention import stage as attention
from gazevlm.evaluate import stage as evaluate
from gazevlm.heatmaps import stage as heatmaps
from test_evaluate_stage import CODEC, loader, models, small_params

# where each stage writes each table, relative to the run's root, and its contract
WRITTEN = {
    "data/extract/videos.parquet": layout.VIDEOS,
    "data/extract/gaze_frames.parquet": layout.GAZE_FRAMES,
    "data/extract/keyframes.parquet": layout.KEYFRAMES,
    "data/extract/windows.parquet": layout.WINDOWS,
    "data/annotate/captions.parquet": layout.CAPTIONS,
    "data/annotate/targets.parquet": layout.TARGETS,
    "data/heatmaps/keyframes.parquet": layout.HEATMAP_KEYFRAMES,
}


@pytest.fixture(scope="module")
def written(tiny_world, tmp_path_factory) -> Path:  # noqa: F811
    """extract, annotate (narrations) and heatmaps on the tiny world, then evaluate with stand-in models."""
    root = tmp_path_factory.mktemp("schemas")
    p = tiny_params(tiny_world)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        extract.run(p)
        annotate.run(gparams.with_overrides(p, annotate={"source": "narrations"}), root=root)
        heatmaps.run(gparams.with_overrides(p, heatmaps={"heatmap_size": 16, "shard_max_samples": 4}))
    tok = make_tokenizer()
    for synthetic_world in (False, True):  # the grounding scores are written on the synthetic world only
        e = gparams.with_overrides(small_params(), train={"tasks": ("future",), "seeds": (0,)})
        out = root / f"eval_{synthetic_world}"
        (out / layout.ANNOTATE_DIR).mkdir(parents=True)
        (out / layout.ANNOTATE_DIR / "targets.parquet").write_bytes(
            (root / "data/annotate/targets.parquet").read_bytes()
        )
        evaluate.run(e, root=out, load_model=models(tok), batches=loader(), codec=CODEC, synthetic=synthetic_world)
    return root


def predictions(root: Path) -> list[Path]:
    return sorted(root.glob("eval_*/data/predictions/*/*/seed0.parquet"))


def plain_pandas_bytes(path: Path) -> bytes:
    """What pandas writes with no schema for the file's values given as Python objects (rows of dicts,
    as the stages build them): the writers' behaviour before the schemas were declared."""
    table = pq.read_table(path)
    buf = io.BytesIO()
    pd.DataFrame(table.to_pylist(), columns=table.column_names).to_parquet(buf, index=False)
    return buf.getvalue()


@pytest.mark.parametrize("name", WRITTEN)
def test_every_writer_writes_its_declared_schema(written, name):
    assert pq.read_schema(written / name).remove_metadata().equals(WRITTEN[name])


def test_predictions_have_declared_columns_in_declared_order(written):
    files = predictions(written)
    assert len(files) == 6  # 3 runs x (plain, synthetic world)
    grounded = set()
    for path in files:
        found = pq.read_schema(path).remove_metadata()
        assert found.equals(layout.schema_of(layout.PREDICTIONS, found.names))
        assert found.names == [c for c in layout.PREDICTIONS.names if c in found.names]
        assert set(layout.PREDICTION_COLUMNS) <= set(found.names)
        grounded |= set(found.names)
    assert grounded == set(layout.PREDICTIONS.names)  # every declared column is written by some run


@pytest.mark.parametrize("name", [n for n in WRITTEN if not n.startswith("data/annotate")])
def test_declared_schemas_change_no_byte_of_what_pandas_wrote(written, name):
    # annotate always built its arrow table with an explicit schema (text as string), so only the
    # schema test above applies to it
    assert (written / name).read_bytes() == plain_pandas_bytes(written / name)


def test_declared_predictions_schema_changes_no_byte(written):
    for path in predictions(written):
        assert path.read_bytes() == plain_pandas_bytes(path), path


def test_synthetic_gaze_csv_has_the_ego4d_header_and_typed_data_columns(tmp_path):
    table = pd.DataFrame(
        {c: [1, 2] if c in ("component_idx", "world_index") else [0.5, 0.25] for c in ego4d.GAZE_COLUMNS}
    )
    sample.write_gaze_csv(tmp_path / "g.csv", table)
    back = pd.read_csv(tmp_path / "g.csv")
    assert tuple(back.columns) == ego4d.GAZE_COLUMNS
    assert (
        pa.Schema.from_pandas(back[ego4d.GAZE_DATA.names], preserve_index=False)
        .remove_metadata()
        .equals(ego4d.GAZE_DATA)
    )
    assert back[list(ego4d.GAZE_COLUMNS[len(ego4d.GAZE_DATA) :])].isna().all().all()
    assert set(ego4d.GAZE_REQUIRED) <= set(ego4d.GAZE_DATA.names)


def csv_schema(path: Path) -> pa.Schema:
    back = pd.read_csv(path, keep_default_na=False)
    return pa.Schema.from_pandas(back, preserve_index=False).remove_metadata()


def test_overlap_csv_has_the_declared_columns_and_types(tmp_path):
    m = {"topk_overlap": {"mean": 0.5}, "last_frame_topk_overlap": {"mean": 0.25}, "chance_topk": {"mean": 0.125}}
    path = tmp_path / "overlap.csv"
    attention.overlap_rows({"gaze": {"future": {"attention": m}}}).to_csv(path, index=False, float_format="%.6g")
    assert csv_schema(path).equals(layout.OVERLAP)


def test_video_predictions_csv_has_the_declared_columns_and_types(tmp_path):
    row = {
        "window": 0,
        "window_id": "clip_0000000",
        "t_start": 0.0,
        "t_end": 4.0,
        "keyframe_frames": [0, 30],
        "keyframe_times": [0.0, 1.0],
        "horizon_in_video": True,
        "prediction": "pick up the cup",
    }
    path = tmp_path / "predictions.csv"
    predict._csv({"predictions": [row]}).to_csv(path, index=False)
    assert csv_schema(path).equals(layout.VIDEO_PREDICTIONS_CSV)


# --- read_table -----------------------------------------------------------------------------------------


def keyframes() -> pd.DataFrame:
    return pd.DataFrame(
        {"keyframe_id": ["v_0000001"], "uid": ["v"], "frame": [1], "t": [0.5], "split": ["train"], "path": ["a.jpg"]}
    )


def test_read_table_returns_a_table_that_keeps_its_contract(tmp_path):
    path = tmp_path / "keyframes.parquet"
    keyframes().to_parquet(path, index=False)
    pd.testing.assert_frame_equal(layout.read_table(path, layout.KEYFRAMES), pd.read_parquet(path))


def test_read_table_accepts_string_for_large_string(tmp_path):
    path = tmp_path / "keyframes.parquet"
    pq.write_table(pa.Table.from_pandas(keyframes(), preserve_index=False).cast(layout.KEYFRAMES), path)
    strings = pa.schema([pa.field(f.name, pa.string()) if f.type == pa.large_string() else f for f in layout.KEYFRAMES])
    pq.write_table(pq.read_table(path).cast(strings), path)
    assert pq.read_schema(path).field("uid").type == pa.string()
    assert len(layout.read_table(path, layout.KEYFRAMES)) == 1


def test_read_table_names_the_file_and_the_missing_column(tmp_path):
    path = tmp_path / "keyframes.parquet"
    keyframes().drop(columns="path").to_parquet(path, index=False)
    with pytest.raises(ValueError, match=rf"{path}: missing column\(s\) \['path'\]"):
        layout.read_table(path, layout.KEYFRAMES)
    assert len(layout.read_table(path, layout.KEYFRAMES, ["keyframe_id", "frame"])) == 1  # a reader's subset


def test_read_table_names_the_file_and_the_mistyped_column(tmp_path):
    path = tmp_path / "keyframes.parquet"
    keyframes().astype({"frame": "float64"}).to_parquet(path, index=False)
    with pytest.raises(ValueError, match=rf"{path}: wrong column type\(s\): frame is double, not int64"):
        layout.read_table(path, layout.KEYFRAMES)


def test_read_table_names_a_missing_file_and_an_unknown_column(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet: not found"):
        layout.read_table(tmp_path / "nope.parquet", layout.KEYFRAMES)
    path = tmp_path / "keyframes.parquet"
    keyframes().to_parquet(path, index=False)
    with pytest.raises(ValueError, match=r"column\(s\) \['colour'\] not in the contract"):
        layout.read_table(path, layout.KEYFRAMES, ["uid", "colour"])


def test_a_list_column_of_the_wrong_element_type_is_refused(tmp_path):
    path = tmp_path / "windows.parquet"
    table = pa.table({"window_id": ["w"], "obs_frames": pa.array([[0.5]], type=pa.list_(pa.float64()))})
    pq.write_table(table, path)
    with pytest.raises(ValueError, match=r"obs_frames is list<\w+: double>, not list<\w+: int64>"):
        layout.read_table(path, layout.WINDOWS, ["window_id", "obs_frames"])
