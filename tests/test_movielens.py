"""MovieLens-100K: reading RecBole's files, the schema's rows, bad input, the pinned fetch.

Every test but one runs on generated files of the same format (fake_movielens); the one
that reads the real data skips unless the pinned wheel is already in the cache.
"""

from __future__ import annotations

import numpy as np
import pytest
from fake_movielens import write as write_fake

from deepfm_lib.config import MovieLensParams, PreprocessParams
from deepfm_lib.data import movielens
from deepfm_lib.data.dataset import iter_batches, layout
from deepfm_lib.data.schema import DataFormatError

CLEAN = PreprocessParams(protocol="clean", shards=2, rows_per_record=100)


@pytest.fixture
def fake(tmp_path):
    return write_fake(tmp_path / "ml")


def rows(data_dir, split):
    parts = list(iter_batches(data_dir, split, 10_000, shuffle=False, seed=0))
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def test_rows_follow_the_schema(fake, tmp_path):
    out = tmp_path / "processed"
    stats = movielens.preprocess(fake, out, MovieLensParams(), CLEAN)
    data = stats["data"]
    assert [f["name"] for f in data["fields"]] == ["genre", *movielens.CATEGORICAL]
    assert data["fields"][0] == {"name": "genre", "kind": "sequence", "width": 3}
    assert (layout(out).width, layout(out).weighted, layout(out).reserved) == (9, 3, 7)
    assert {k: s["rows"] for k, s in stats["splits"].items()} == {
        "train": 1600,
        "valid": 200,
        "test": 200,
    }
    ids, weights, labels = rows(out, "train")
    assert ids.shape == (1600, 9) and stats["vocab_size"] == 7 + sum(
        stats["vocab_per_field"].values()
    )
    # Each film's k genres weigh 1/k and sum to 1; unused positions hold the genre OOV id
    # (0) with weight 0; categorical positions weigh 1.
    genre_w = weights[:, :3]
    assert np.allclose(genre_w.sum(axis=1), 1.0)
    k = (genre_w > 0).sum(axis=1)
    assert np.allclose(genre_w[genre_w > 0], np.repeat(1.0 / k, k))
    assert (ids[:, :3][genre_w == 0] == 0).all()
    assert (weights[:, 3:] == 1).all()
    # Training values all have their own ids (threshold 0); the label is rating >= 4.
    assert (ids[:, 3:] >= 7).all() and ids.max() < stats["vocab_size"]
    ratings = np.array(
        [int(line.split("\t")[2]) for line in (fake / "ml-100k.inter").read_text().splitlines()[1:]]
    )
    assert stats["splits"]["train"]["positives"] + stats["splits"]["valid"]["positives"] + stats[
        "splits"
    ]["test"]["positives"] == int((ratings >= 4).sum())
    assert set(np.unique(labels)) <= {0.0, 1.0}


def test_settings_change_the_label_and_the_rows(fake, tmp_path):
    ratings = np.array(
        [int(line.split("\t")[2]) for line in (fake / "ml-100k.inter").read_text().splitlines()[1:]]
    )
    dropped = movielens.preprocess(fake, tmp_path / "a", MovieLensParams(drop_neutral=True), CLEAN)
    assert dropped["dropped_rows"] == int((ratings == 3).sum()) > 0
    assert sum(s["rows"] for s in dropped["splits"].values()) == int((ratings != 3).sum())
    strict = movielens.preprocess(fake, tmp_path / "b", MovieLensParams(label_threshold=5), CLEAN)
    assert sum(s["positives"] for s in strict["splits"].values()) == int((ratings == 5).sum())
    # A count threshold folds rare training values into their field's OOV id.
    folded = movielens.preprocess(fake, tmp_path / "c", MovieLensParams(threshold=30), CLEAN)
    assert folded["vocab_per_field"]["item_id"] < 80
    ids, _, _ = rows(tmp_path / "c", "test")
    assert (ids[:, 4] == 2).any()  # item_id is field 2: its OOV id is 2


def _edit(folder, name, line, column, value):
    path = folder / f"ml-100k.{name}"
    lines = path.read_text().splitlines()
    parts = lines[line - 1].split("\t")
    parts[column] = value
    lines[line - 1] = "\t".join(parts)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("name", "line", "column", "value", "field", "message"),
    [
        ("inter", 1, 2, "score:float", "rating", "missing column 'rating'"),
        ("inter", 7, 2, "6", "rating", "not a rating from 1 to 5"),
        ("inter", 9, 2, "four", "rating", "not a rating from 1 to 5"),
        ("inter", 12, 0, "999", "user_id", "is not in"),
        ("inter", 15, 1, "999", "item_id", "is not in"),
        ("user", 1, 3, "job:token", "occupation", "missing column"),
        ("item", 3, 0, "1", "item_id", "appears twice"),
    ],
)
def test_bad_input_names_file_line_and_field(
    fake, tmp_path, name, line, column, value, field, message
):
    _edit(fake, name, line, column, value)
    out = tmp_path / "processed"
    with pytest.raises(DataFormatError, match=message) as err:
        movielens.preprocess(fake, out, MovieLensParams(), CLEAN)
    wanted_file = "item" if message == "appears twice" else name
    assert err.value.path.endswith(f"ml-100k.{wanted_file}")
    assert (err.value.line, err.value.field) == (line, field)
    # Nothing is left behind: no output folder, no temporary one.
    assert not out.exists() and list(tmp_path.iterdir()) == [fake]


def test_a_line_with_missing_values_is_named(fake, tmp_path):
    path = fake / "ml-100k.inter"
    lines = path.read_text().splitlines()
    lines[4] = "1\t2"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"ml-100k.inter: line 5: 2 tab-separated values"):
        movielens.preprocess(fake, tmp_path / "out", MovieLensParams(), CLEAN)


def test_a_missing_source_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.movielens.path"):
        movielens.locate(MovieLensParams(path=str(tmp_path / "nowhere")))
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="ml-100k.inter"):
        movielens.preprocess(tmp_path / "half", tmp_path / "out", MovieLensParams(), CLEAN)


def test_the_zoo_protocol_is_refused(fake, tmp_path):
    with pytest.raises(ValueError, match="clean"):
        movielens.preprocess(fake, tmp_path / "out", MovieLensParams(), PreprocessParams())


def test_a_wrong_hash_in_the_cache_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFM_CACHE", str(tmp_path))
    (tmp_path / movielens.WHEEL).write_bytes(b"not the wheel")
    with pytest.raises(ValueError, match="expected 9c9948"):
        movielens.fetch()


def test_offline_fetch_fails_clearly_and_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFM_CACHE", str(tmp_path / "cache"))
    # No index and an empty find-links folder: pip cannot find the wheel, as offline.
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="could not download recbole==1.2.1"):
        movielens.fetch()
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_real_files_when_the_wheel_is_cached(tmp_path):
    wheel = movielens.cache_dir() / movielens.WHEEL
    if not wheel.is_file():
        pytest.skip(f"{wheel} not cached (python -m deepfm_lib.data.movielens fetch)")
    stats = movielens.preprocess(wheel, tmp_path / "out", MovieLensParams(), CLEAN)
    # Counts only: the rows themselves are never shown (the licence).
    assert stats["rows_read"] == 100_000
    assert sum(s["rows"] for s in stats["splits"].values()) == 100_000
    assert stats["data"]["width"] == 12  # six genre positions (the most any film has) + 6
    assert stats["vocab_per_field"]["gender"] == 2
    assert stats["vocab_per_field"]["user_id"] == 943


def test_params_for_movielens(base_params):
    from deepfm_lib.config import ParamsError, parse

    base_params["preprocess"]["protocol"] = "zoo"
    # The MovieLens study runs under the clean protocol whatever the main study's is...
    point = parse(base_params).for_movielens()
    assert point.preprocess.protocol == "clean" and point.data.source == "movielens"
    # ...but the main pipeline on MovieLens needs a validation split to tune on.
    base_params["data"]["source"] = "movielens"
    with pytest.raises(ParamsError, match="data.source movielens needs the clean"):
        parse(base_params)
    base_params["data"]["source"] = "synthetic"
    base_params["movielens"]["models"] = ["deepfm", "xgboost"]
    with pytest.raises(ParamsError, match="movielens.models: 'xgboost'"):
        parse(base_params)
    base_params["movielens"]["models"] = ["deepfm", "deepfm"]
    with pytest.raises(ParamsError, match="twice"):
        parse(base_params)
