"""The real study, end to end: `dvc repro` on tiny params in a copy of the repository.

Runs every stage for real (synthetic data, MindRecord shards, MindSpore training, papermill
notebooks, nbconvert) and then checks that a second `dvc repro` has nothing to do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

TINY = {
    "data": {"synthetic": {"rows": 6000, "scale": 0.002}},
    "preprocess": {"threshold": 5, "shards": 2},
    "model": {"emb_dim": 8, "deep_layers": [32, 16]},
    "train": {"batch_size": 500, "epochs": 2, "lr": 0.002},
    "evaluate": {"batch_size": 1000},
}


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


def run(repo: Path, *cmd: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def study(repo_root, tmp_path_factory):
    repo = copy_repo(repo_root, tmp_path_factory.mktemp("study"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(_merge(params, TINY), sort_keys=False))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny study")
    first = run(repo, "dvc", "repro")
    return repo, first


@pytest.mark.slow
def test_repro_produces_report_and_metrics(study):
    repo, _ = study
    metrics = json.loads((repo / "reports/metrics/CPU.json").read_text())
    data = json.loads((repo / "reports/metrics/preprocess.json").read_text())
    assert metrics["rows"] == data["rows"]["test"]
    assert 0.5 < metrics["auc"] <= data["oracle_auc"] + 0.05
    assert 0 < metrics["logloss"] < 1
    html = (repo / "reports/index.html").read_text()
    assert "data:image/png;base64," in html
    assert "synthetic" in html and "teacher" in html
    assert f"{metrics['auc']:.4f}" in html
    loss = (repo / "reports/train/CPU/loss.csv").read_text().splitlines()
    assert loss[0].startswith("step") and len(loss) > 10
    for nb_path in (repo / "reports/notebooks").glob("*.ipynb"):
        nb = nbformat.read(nb_path, as_version=4)
        assert "start_time" not in nb.metadata.get("papermill", {}), nb_path.name


@pytest.mark.slow
def test_second_repro_reruns_nothing(study):
    repo, _ = study
    again = run(repo, "dvc", "repro")
    assert "Running stage" not in again.stdout
    status = run(repo, "dvc", "status")
    assert "up to date" in status.stdout.lower()


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.mark.slow
def test_report_renders_offline_in_a_real_browser(study, tmp_path_factory):
    """Headless Chromium, every request outside the file refused: images load, no errors."""
    from playwright.sync_api import sync_playwright

    repo, _ = study
    page_url = (repo / "reports/index.html").as_uri()
    shots = tmp_path_factory.mktemp("browser")
    outside, errors = [], []

    def only_the_file(route):
        if route.request.url == page_url or route.request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=_chromium(),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.route("**/*", only_the_file)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
            page.goto(page_url, wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth])"
            )
            title = page.title()
            heading = page.locator("h1").first.inner_text()
            page.screenshot(path=str(shots / "report.png"), full_page=True)
        finally:
            browser.close()
    print(f"screenshot: {shots / 'report.png'}")
    assert not outside, f"requests left the file: {outside}"
    assert not errors, f"script errors: {errors}"
    assert len(images) >= 2, "the loss and AUC figures"
    assert all(done and width > 0 for done, width in images), images
    assert "reproducibility study" in heading and title
