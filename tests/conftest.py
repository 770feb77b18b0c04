"""Shared fixtures: where the repository and the optional shared sample data live."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import fake_movielens
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the test ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that share an expensive fixture run on one xdist worker (`--dist loadgroup`).

    The suite runs on one process per CPU (pyproject's addopts: `-n logical`). A session
    or module fixture is built once in every worker that needs it, and the tiny study
    (about 2.5 minutes) built twice would cost more than the second core gives. So each test that
    uses such a fixture (one of this suite's, not pytest's; `repo_root` is only a path)
    carries an xdist_group: the group runs whole on one worker, and every other test goes to
    whichever worker is free.
    """
    for item in items:
        used = item._fixtureinfo.name2fixturedefs  # what pytest resolved for this test
        for name in item.fixturenames:
            fixture = used.get(name, [None])[-1]
            if fixture is None or fixture.scope == "function" or name == "repo_root":
                continue
            if not fixture.func.__module__.startswith(("conftest", "test_")):
                continue  # pytest's and plugins' own (tmp_path_factory, worker_id)
            # A module's fixtures build on each other (test_cli: data, then a trained run):
            # one group per module; a session fixture is its own group.
            group = name if fixture.scope == "session" else item.module.__name__
            item.add_marker(pytest.mark.xdist_group(group))
            break
    # The end-to-end runs first (a stable sort, the same on every worker): a long one
    # handed out last would leave the other worker idle at the end.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture
def criteo_sample() -> Path:
    """200 real Criteo rows; tests that need them skip where ../shared is absent."""
    path = SHARED_DATA / "criteo_sample_200.txt"
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared is optional)")
    return path


@pytest.fixture
def base_params() -> dict:
    """The repository's params.yaml as a mapping, for tests to change one setting of."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


# The tiny study of the end-to-end tests: two models (the baseline and DeepFM) over two
# seeds, so every statistic of the report (SD, paired interval, DeLong) is computed.
TINY = {
    "models": ["lr", "deepfm"],
    "data": {"synthetic": {"rows": 6000, "scale": 0.002}},
    "preprocess": {"threshold": 5, "shards": 2},
    "model": {"emb_dim": 8, "deep_layers": [32, 16]},
    "train": {"batch_size": 500, "epochs": 3, "patience": 1, "lr": 0.002, "seeds": [1001, 1002]},
    "evaluate": {"batch_size": 1000},
    # Replaces params.yaml's grids (see tiny_params): LR searches two learning rates, DeepFM
    # runs its one preset point, so the tune stage, its choice and its reuse are all exercised.
    "tune": {"grid": {"lr": {"lr": [0.002, 0.01]}, "deepfm": {}}},
    # Off here: on, it would fetch and train on the real MovieLens-100K. The `study`
    # fixture switches it on with generated files of MovieLens's format.
    "movielens": {"enabled": False},
}


def tiny_params(params: dict) -> dict:
    """params.yaml's settings with the tiny study's on top (its tune grids replace all)."""
    merged = _merge(params, TINY)
    merged["tune"]["grid"] = TINY["tune"]["grid"]
    return merged


# What the tiny study gives, (test AUC, logloss) per (model, seed): measured on 2026-12-07
# with the tuned protocol (clean split, LR's two-point grid, early stopping). CPU training is
# bit-reproducible, so these are pinned; the tolerance (PIN) is far above float noise and
# below what a change to the maths does. The test split has 600 rows and the runs are short,
# so the AUCs are low; a pinned value catches a change all the same, but not every one: the
# FM term is still tiny after a few dozen steps, so scaling it by 1.001 passes here
# (test_train's pins and the headline test in test_pipeline catch that one).
TINY_RESULTS = {
    ("lr", 1001): (0.6421460176991151, 0.5433394926781144),
    ("lr", 1002): (0.6205154269313562, 0.5443475947972608),
    ("deepfm", 1001): (0.6188710834728534, 0.5526838614126541),
    ("deepfm", 1002): (0.5810212867734992, 0.5542785227079196),
}
PIN = {"auc": 1e-4, "logloss": 1e-5}


def assert_pinned(run: dict, expected: tuple[float, float], what: str) -> None:
    """`run`'s test AUC and logloss equal the pinned pair within PIN."""
    for key, value in zip(("auc", "logloss"), expected, strict=True):
        assert run[key] == pytest.approx(value, abs=PIN[key]), f"{what}: {key}"


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def copy_repo(src: Path, dst: Path) -> Path:
    """The working tree as git sees it (tracked and untracked, not ignored), in a new repo."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=src,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        if (src / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)
    return dst


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def file_size_limit(limit: int):
    """A preexec_fn: no file may grow past `limit` bytes, as on a disk that fills up.

    The write past it fails with an OSError (EFBIG) instead of the default SIGXFSZ kill, so
    the code under test meets a failing write, as it would with ENOSPC.
    """

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def tool_env() -> dict[str, str]:
    """The environment with this interpreter's bin first: dvc, papermill, python, jupyter."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def run(repo: Path, *cmd: str, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=repo, env=tool_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


@pytest.fixture(scope="session")
def study(repo_root, tmp_path_factory):
    """The real pipeline run once on tiny params in a copy of the repository, shared."""
    repo = copy_repo(repo_root, tmp_path_factory.mktemp("study"))
    params = tiny_params(yaml.safe_load((repo / "params.yaml").read_text()))
    fake = fake_movielens.write(tmp_path_factory.mktemp("movielens"), ratings=3000)
    params["data"]["movielens"]["path"] = str(fake)
    params["movielens"]["enabled"] = True
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny study")
    first = run(repo, "dvc", "repro")
    return repo, first
