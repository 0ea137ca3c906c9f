"""Provenance of results.json: the commit is the one of the code the run started with."""

import subprocess

from mmresearch.utils.run_info import git_commit


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_the_commit_is_read_once_so_a_commit_made_during_a_run_is_not_reported(tmp_path):
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "first")
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == first  # the run starts (setup_run reads it)
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "second")
    assert git_commit(tmp_path) == first  # results.json, written at the end, names the code that ran


def test_outside_a_repository_there_is_no_commit(tmp_path):
    assert git_commit(tmp_path / "nowhere") is None
