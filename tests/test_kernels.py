"""The fused CPU kernels: when they are used, and what happens without a C compiler."""

from __future__ import annotations

import logging

import pytest

from deepfm_lib.config import TrainConfig
from deepfm_lib.engine import kernels
from deepfm_lib.engine.kernels import KernelUnavailable, use_fused


@pytest.fixture
def no_compiler(monkeypatch):
    """A machine without cc or gcc (and a fresh build cache, so nothing is reused)."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CC", raising=False)
    kernels.library.cache_clear()
    yield
    kernels.library.cache_clear()


def test_auto_uses_the_fused_kernels_on_cpu_and_builds_them_once(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kernels.library.cache_clear()
    try:
        assert use_fused("auto", "CPU")
        built = kernels.library()
        assert built.is_file() and tmp_path in built.parents
        assert [p.name for p in built.parent.iterdir()] == [built.name]  # no temporary left
    finally:
        kernels.library.cache_clear()


@pytest.mark.parametrize("device", ["GPU", "Ascend"])
def test_other_devices_use_mindspore_kernels(device):
    assert not use_fused("auto", device)
    assert not use_fused("mindspore", "CPU")
    with pytest.raises(KernelUnavailable, match=f"CPU target only, not {device}"):
        use_fused("fused", device)


def test_without_a_compiler_auto_falls_back_with_a_warning(no_compiler, caplog):
    with caplog.at_level(logging.WARNING, logger="deepfm_lib.kernels"):
        assert not use_fused("auto", "CPU")
    assert "no C compiler found" in caplog.text


def test_without_a_compiler_fused_stops_and_says_what_to_do(no_compiler):
    with pytest.raises(KernelUnavailable, match="install gcc or set train.kernels: mindspore"):
        use_fused("fused", "CPU")


def test_a_broken_compiler_names_the_source_and_its_errors(tmp_path, monkeypatch):
    fake = tmp_path / "badcc"
    fake.write_text("#!/bin/sh\necho 'embedding_cpu.c:1: error: no' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    kernels.library.cache_clear()
    try:
        with pytest.raises(KernelUnavailable, match=r"embedding_cpu\.c.*failed \(exit 1\)"):
            kernels.library()
        assert not any((tmp_path / "cache").rglob("*.so"))  # nothing half-built left
    finally:
        kernels.library.cache_clear()


def test_an_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="train.kernels must be one of"):
        use_fused("c", "CPU")
    with pytest.raises(
        ValueError, match="kernels\n  Input should be 'auto', 'fused' or 'mindspore'"
    ):
        TrainConfig(batch_size=8, epochs=1, kernels="fastest")


def test_an_unwritable_cache_falls_back_with_its_path_named(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    kernels.library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="deepfm_lib.kernels"):
            assert not use_fused("auto", "CPU")
        assert "cannot write the kernel cache" in caplog.text and str(blocker) in caplog.text
    finally:
        kernels.library.cache_clear()
