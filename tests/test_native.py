"""The loader of the C kernels (``atari_dt.native``): a build into an empty cache, a corrupt
file where the build should be, and a clean fallback (one warning, nothing half-written)
when the build fails or is switched off."""

from __future__ import annotations

import warnings

import pytest

from atari_dt import native


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """``library()`` rebuilt from nothing into ``tmp_path`` (its cache cleared before and
    after, so other tests keep the real one)."""
    monkeypatch.setenv("ATARI_DT_CACHE", str(tmp_path))
    native.library.cache_clear()
    yield tmp_path
    native.library.cache_clear()


@pytest.mark.skipif(native.find_compiler() is None, reason="no C compiler")
def test_library_builds_into_the_cache_and_replaces_a_corrupt_file(fresh_library) -> None:
    """A file that is not a library where the build should be (truncated by a full disk, or
    foreign) is built afresh, through a temp file that does not outlive the build."""
    target = native.library_path(native.find_compiler())
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a shared library")
    assert native.library() is not None
    assert [path.name for path in target.parent.iterdir()] == [target.name]
    assert target.stat().st_size > 1000


def test_library_falls_back_with_one_warning(fresh_library, monkeypatch) -> None:
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails
    with pytest.warns(UserWarning, match="could not build or load the C kernels"):
        assert native.library() is None
    assert not any((fresh_library / "native").iterdir())  # nothing half-written left
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is None  # cached: no second warning
    native.library.cache_clear()
    monkeypatch.setenv("ATARI_DT_NATIVE", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is None


def test_no_compiler_warns_once_and_falls_back(fresh_library, monkeypatch) -> None:
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="no C compiler"):
        assert native.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is None


def test_no_home_directory_falls_back_instead_of_raising(fresh_library, monkeypatch) -> None:
    """``Path.home()`` raises without HOME or a passwd entry (``docker run --user N``)."""
    monkeypatch.delenv("ATARI_DT_CACHE")

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(native.Path, "home", staticmethod(no_home))
    with pytest.warns(UserWarning, match="RuntimeError: Could not determine home"):
        assert native.library() is None
