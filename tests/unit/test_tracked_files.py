"""The run's guard against tests writing tracked files (tests/conftest.py), on a scratch
git checkout."""

import shutil
import subprocess
from types import SimpleNamespace

import pytest

from tests import conftest

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout of three committed files, seen by the guard as the repository."""

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True
        )

    git("init", "-q")
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text(name)
    git("add", ".")
    git("commit", "-q", "-m", "start")
    monkeypatch.setattr(conftest, "ROOT", tmp_path)
    return SimpleNamespace(path=tmp_path, git=git)


def session():
    return SimpleNamespace(config=SimpleNamespace(stash=pytest.Stash()), exitstatus=0)


def test_modified_renamed_and_deleted_files_are_listed(checkout):
    (checkout.path / "a.txt").write_text("changed")
    checkout.git("mv", "b.txt", "renamed.txt")
    (checkout.path / "c.txt").unlink()
    (checkout.path / "untracked.txt").write_text("new")
    assert conftest.modified_tracked_files() == {"a.txt", "renamed.txt", "c.txt"}


def test_a_run_that_writes_a_clean_tracked_file_fails(checkout, monkeypatch):
    monkeypatch.delenv("TESTS_ALLOW_EDITS", raising=False)
    (checkout.path / "a.txt").write_text("edited before the run")
    run = session()
    conftest.pytest_sessionstart(run)
    (checkout.path / "a.txt").write_text("edited again during the run")
    (checkout.path / "instance.log").write_text("untracked output")
    conftest.pytest_sessionfinish(run)
    assert run.exitstatus == 0

    (checkout.path / "b.txt").write_text("written by a test")
    conftest.pytest_sessionfinish(run)
    assert run.exitstatus == pytest.ExitCode.TESTS_FAILED
    assert run.config.stash[conftest._WRITTEN] == ["b.txt"]


def test_tests_allow_edits_turns_the_check_off(checkout, monkeypatch):
    monkeypatch.setenv("TESTS_ALLOW_EDITS", "1")
    run = session()
    conftest.pytest_sessionstart(run)
    (checkout.path / "a.txt").write_text("edited by hand during the run")
    conftest.pytest_sessionfinish(run)
    assert run.exitstatus == 0


def test_outside_a_git_checkout_nothing_is_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "ROOT", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    run = session()
    conftest.pytest_sessionstart(run)
    conftest.pytest_sessionfinish(run)
    assert conftest.modified_tracked_files() is None and run.exitstatus == 0
