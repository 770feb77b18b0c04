"""params.yaml validation: what a user with a typo or an impossible value sees."""

from __future__ import annotations

import pytest

from deepfm_lib import params
from deepfm_lib.params import ParamsError


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
        ({"targets": {}}, "targets = {}"),
        ({"preprocess": {"protocol": "mine"}}, "preprocess.protocol = 'mine'"),
        ({"data": {"source": "criteo", "criteo_path": "/no/such/train.txt"}}, "no such file"),
    ],
)
def test_bad_values_name_the_key_and_value(raw, expected):
    with pytest.raises(ParamsError) as err:
        params.parse(raw, source="p.yaml")
    assert expected in str(err.value)
    assert str(err.value).startswith("p.yaml: ")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="no such file"):
        params.load(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        params.load(bad)


def test_unknown_target_lists_the_known_ones():
    p = params.parse({"targets": {"CPU": {"device": "CPU"}, "fast": {"device": "CPU"}}})
    with pytest.raises(ParamsError, match="CPU, fast"):
        p.target("GPU")
