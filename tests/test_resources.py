"""vipaint.resources: an explicit path wins over the environment variable, which wins over nothing;
every failure names what to set."""
from __future__ import annotations

import pytest

from vipaint.resources import RESOURCES, ResourceNotFound, find, resolve

ENV = RESOURCES["cifar10"].env


@pytest.fixture
def two_zips(tmp_path):
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    a.write_bytes(b"")
    b.write_bytes(b"")
    return a, b


def test_explicit_path_wins_over_env(two_zips, monkeypatch):
    a, b = two_zips
    monkeypatch.setenv(ENV, str(b))
    assert find("cifar10", a) == a
    assert resolve("cifar10", str(a)) == a


def test_env_is_used_without_explicit_path(two_zips, monkeypatch):
    _, b = two_zips
    monkeypatch.setenv(ENV, str(b))
    assert find("cifar10") == b and resolve("cifar10", None) == b


def test_missing_names_option_and_variable(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert find("cifar10") is None
    with pytest.raises(ResourceNotFound, match=f"pass --data.init_args.zip_path or set the environment variable {ENV}"):
        resolve("cifar10", None, "--data.init_args.zip_path")


@pytest.mark.parametrize("name", sorted(RESOURCES))
def test_nonexistent_path_is_an_error_not_a_fallback(name, tmp_path, monkeypatch):
    res = RESOURCES[name]
    monkeypatch.delenv(res.env, raising=False)
    with pytest.raises(ResourceNotFound, match="does not exist"):
        find(name, tmp_path / "missing")
    monkeypatch.setenv(res.env, str(tmp_path / "missing"))
    with pytest.raises(ResourceNotFound, match=f"\\${res.env} does not exist"):
        find(name)


def test_kind_is_checked(tmp_path, monkeypatch):
    """A folder resource given a file (and the reverse) is refused: the wrong thing was pointed at."""
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(ResourceNotFound, match="not a dir"):
        find("lpips", tmp_path / "f")
    with pytest.raises(ResourceNotFound, match="not a file"):
        find("cifar10", tmp_path)
