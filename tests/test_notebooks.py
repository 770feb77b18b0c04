"""Stored notebooks are clean sources; executed copies are normalised to be reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from deepfm_lib.pipeline import notebook

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_notebook_has_no_outputs_and_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    # papermill's parser breaks on '=' inside a comment of a parameters line.
    for line in tagged[0].source.splitlines():
        assert "=" not in line.partition("#")[2], line
    assert nb.metadata.kernelspec.name == "python3"


def test_every_pipeline_notebook_exists(repo_root):
    names = {p.name for p in NOTEBOOKS}
    dvc_yaml = (repo_root / "dvc.yaml").read_text()
    for name in names:
        assert f"notebooks/{name}" in dvc_yaml


def test_normalize_removes_run_stamps_and_is_idempotent(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("1 + 1"), nbformat.v4.new_markdown_cell("# hi")]
    )
    nb.metadata["papermill"] = {
        "start_time": "2026-01-01T00:00:00",
        "end_time": "2026-01-01T00:00:09",
        "duration": 9.1,
        "parameters": {"target": "CPU"},
    }
    nb.cells[0].metadata["papermill"] = {"duration": 1.0, "status": "completed"}
    nb.cells[0].metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:01"}
    nb.cells[0]["id"] = "a1b2c3-random"
    path = tmp_path / "run.ipynb"
    nbformat.write(nb, path)

    notebook.normalize(path)
    first = path.read_bytes()
    data = json.loads(first)
    assert data["metadata"]["papermill"] == {"parameters": {"target": "CPU"}}
    assert data["cells"][0]["metadata"] == {}
    assert [c["id"] for c in data["cells"]] == ["cell-0", "cell-1"]
    notebook.normalize(path)
    assert path.read_bytes() == first


def test_normalize_drops_object_addresses_from_plain_reprs(tmp_path):
    # A Styler (or any object with the default repr) shows as `<... at 0x7f...>` beside its
    # HTML; the address differs every run and would make the executed notebook change.
    out = nbformat.v4.new_output(
        "execute_result",
        data={"text/plain": "<pandas.io.formats.style.Styler at 0x7eff639315d0>"},
        execution_count=1,
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("t.style", outputs=[out])])
    path = tmp_path / "run.ipynb"
    nbformat.write(nb, path)
    notebook.normalize(path)
    data = json.loads(path.read_text())["cells"][0]["outputs"][0]["data"]
    assert "".join(data["text/plain"]) == "<pandas.io.formats.style.Styler>"


def _same_as_nbformat(tmp_path, src: Path) -> None:
    # normalize writes the JSON itself (importing nbformat costs over a second); its bytes
    # must be exactly what nbformat writes for the same notebook.
    path = tmp_path / src.name
    path.write_bytes(src.read_bytes())
    notebook.normalize(path)
    written = nbformat.writes(nbformat.read(path, as_version=4)).encode() + b"\n"
    assert path.read_bytes() == written


@pytest.mark.parametrize("src", NOTEBOOKS, ids=lambda p: p.name)
def test_normalize_writes_what_nbformat_writes(tmp_path, src):
    _same_as_nbformat(tmp_path, src)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["03_train_deepfm-CPU.ipynb", "05_report.ipynb"])
def test_executed_notebooks_are_normalised(study, tmp_path, name):
    """Real papermill output, as the tiny study's `dvc repro` left it."""
    repo, _ = study
    src = repo / "reports" / "notebooks" / name
    data = json.loads(src.read_text())
    stamps = {"start_time", "end_time", "duration"} & set(data["metadata"].get("papermill", {}))
    assert not stamps, f"run stamps left: {stamps}"
    assert all(c["id"] == f"cell-{i}" for i, c in enumerate(data["cells"]))
    assert not any(c["metadata"].get("execution") for c in data["cells"]), "cell timestamps"
    assert any(c.get("outputs") for c in data["cells"]), "it was executed"
    _same_as_nbformat(tmp_path, src)
    before = src.read_bytes()
    notebook.normalize(src)
    assert src.read_bytes() == before, "normalising twice changes nothing"


def test_normalize_refuses_other_formats(tmp_path):
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps({"nbformat": 3, "worksheets": []}))
    with pytest.raises(ValueError, match="nbformat 4"):
        notebook.normalize(path)


def test_find_root_from_the_notebooks_folder(repo_root):
    assert notebook.find_root(repo_root / "notebooks") == repo_root


def test_a_notebook_run_out_of_order_says_which_to_run_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        notebook.require(data_dir="scratch/data/processed")
    assert str(err.value) == (
        "data_dir = 'scratch/data/processed': scratch/data/processed/stats.json is missing; "
        "run notebooks/01_preprocess first (it writes scratch/data/processed)"
    )
    (tmp_path / "data/processed").mkdir(parents=True)
    (tmp_path / "data/processed/stats.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="or set data_dir = 'data/processed': the pipel"):
        notebook.require(data_dir="scratch/data/processed")
    notebook.require(data_dir="data/processed")  # present: no error
    with pytest.raises(FileNotFoundError, match="run notebooks/02_tune first"):
        notebook.require(tune_path="scratch/tune/lr-CPU.json")
