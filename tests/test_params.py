"""params.yaml validation: what a user with a typo or an impossible value sees."""

from __future__ import annotations

import pytest

from deepfm_lib import config as params
from deepfm_lib.config import ParamsError


def test_repository_params_are_valid(repo_root):
    p = params.load(repo_root / "params.yaml")
    assert p.targets, "at least one device target"
    assert all(t.device in params.DEVICES for t in p.targets.values())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"trian": {"epochs": 1}}, "unknown key 'trian'"),
        ({"train": {"batch_size": 0}}, "train.batch_size = 0"),
        ({"train": {"batch_sise": 10}}, "unknown key 'train.batch_sise'"),
        ({"model": {"deep_layers": "wide"}}, "model.deep_layers = 'wide'"),
        ({"model": {"dropout": 1.5}}, "model.dropout = 1.5"),
        ({"targets": {"TPU": {"device": "TPU"}}}, "targets.TPU.device = 'TPU'"),
        ({"targets": None}, "targets = None"),
        ({"preset": "huge"}, "preset = 'huge': no such preset; allowed: paper, small, zoo"),
        ({"targets": {"CPU": {"precision": "bf16"}}}, "no bf16"),
        ({"targets": {"CPU": {"train": {"batch_size": -1}}}}, "targets.CPU.train.batch_size"),
        ({"preprocess": {"protocol": "mine"}}, "preprocess.protocol = 'mine'"),
        ({"data": {"source": "criteo", "criteo_path": "/no/such/train.txt"}}, "no Criteo file"),
        ({"data": {"source": "criteo"}}, "put the Kaggle train.txt"),
        ({"data": {"criteo_path": "/no/such/dir"}}, "no such file or folder"),
        ({"tune": {"grid": {"xgb": {"lr": [0.1]}}}}, "tune.grid.xgb: 'xgb' is not a registered"),
        ({"tune": {"grid": {"lr": {"momentum": [0.9]}}}}, "tune.grid.lr.momentum: not a setting"),
        ({"tune": {"grid": {"lr": {"seeds": [[1]]}}}}, "tune.grid.lr.seeds: not a setting"),
        ({"tune": {"grid": {"lr": {"lr": [0.01, -1.0]}}}}, "tune.grid.lr.lr = -1.0"),
        ({"tune": {"grid": {"fm": {"l2": [0.0, 0.0]}}}}, "tune.grid.fm.l2: lists a value twice"),
        ({"tune": {"grid": {"fm": {"l2": []}}}}, "tune.grid.fm.l2"),
        ({"train": {"patience": -1}}, "train.patience = -1"),
        (
            {"targets": {"CPU": {"train": {"lr": 0.1}}}},
            "tune.grid.lr.lr: targets.CPU.train.lr also sets it",
        ),
        ({"reference": {"lr_C": [0.0]}}, "reference.lr_C.0 = 0.0"),
    ],
)
def test_bad_values_name_the_key_and_value(base_params, raw, expected):
    with pytest.raises(ParamsError) as err:
        params.parse(_merge(base_params, raw), source="p.yaml")
    assert expected in str(err.value)
    assert str(err.value).startswith("p.yaml: ")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="no such file"):
        params.load(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        params.load(bad)


def test_unknown_target_lists_the_known_ones(base_params):
    base_params["targets"] = {"CPU": {"device": "CPU"}, "fast": {"device": "CPU"}}
    p = params.parse(base_params)
    with pytest.raises(ParamsError, match="CPU, fast"):
        p.target("GPU")


def test_presets_and_overrides_resolve_in_order(base_params):
    base_params["preset"] = "zoo"
    base_params["train"] = {"epochs": 2}
    base_params["targets"] = {"CPU": {}, "big": {"train": {"batch_size": 4000}}}
    p = params.parse(base_params)
    assert p.model_settings().deep_layers == [1024, 512, 256, 128]
    assert (p.train_settings("CPU").batch_size, p.train_settings("CPU").epochs) == (16000, 2)
    assert (p.train_settings("big").batch_size, p.train_settings("big").epochs) == (4000, 2)
    assert p.train_settings("big").lr == 5e-4


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        is_map = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if is_map else value
    return out


def test_criteo_path_may_name_a_file_or_a_folder(base_params, tmp_path):
    (tmp_path / "train.txt.gz").write_bytes(b"")
    base_params["data"] = {**base_params["data"], "source": "criteo", "criteo_path": str(tmp_path)}
    params.parse(base_params)
    assert params.criteo_file(tmp_path) == tmp_path / "train.txt.gz"
    assert params.criteo_file(tmp_path / "train.txt.gz") == tmp_path / "train.txt.gz"


def test_every_model_of_the_study_needs_a_grid(base_params):
    raw = _merge(base_params, {})
    del raw["tune"]["grid"]["dnn"]
    with pytest.raises(ParamsError, match="tune.grid has no entry for 'dnn'.*`dnn: {}`"):
        params.parse(raw, source="p.yaml")


def test_a_grid_is_every_combination_and_each_point_overrides_the_preset(base_params):
    raw = _merge(base_params, {})
    raw["tune"]["grid"]["fm"] = {"lr": [0.001, 0.01], "emb_dim": [4, 8, 16]}
    p = params.parse(raw)
    grid = p.grid("fm")
    assert len(grid) == 6 and grid[0] == {"lr": 0.001, "emb_dim": 4}
    assert grid[-1] == {"lr": 0.01, "emb_dim": 16}
    point = p.with_settings(grid[-1])
    assert point.train_settings("CPU").lr == 0.01 and point.model_settings().emb_dim == 16
    assert p.train_settings("CPU").lr == base_params["presets"]["small"]["train"]["lr"]
    assert p.tune_seed("CPU") == p.seeds("CPU")[0]
    raw["tune"]["grid"]["fm"] = {}
    assert params.parse(raw).grid("fm") == [{}]  # one point: the preset's settings
