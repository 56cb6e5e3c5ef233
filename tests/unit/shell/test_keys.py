"""The cluster key in force (omdisc/shell/keys.py): a reload on SIGHUP rotates the keys and keeps
the replay state, a key file that cannot be read keeps the keys in force, and state.json shows ids."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from omdisc.core.auth import key_id
from omdisc.core.config import Config
from omdisc.shell import keyfile
from omdisc.shell.keyfile import gen_key
from omdisc.shell.keys import ClusterKeys


@pytest.fixture(autouse=True)
def no_staged_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setattr(keyfile, "DEFAULT_KEY_FILE", tmp_path / "no.key")


def write_keys(path: Path, *keys: str, mode: int = 0o600) -> None:
    path.write_text("".join(k + "\n" for k in keys))
    path.chmod(mode)


def ident(key: str) -> str:
    return key_id(base64.b64decode(key)).hex()


def test_a_reload_rotates_the_keys_and_keeps_the_replay_state(tmp_path: Path) -> None:
    old, new = gen_key(), gen_key()
    path = tmp_path / "cluster.key"
    write_keys(path, old)
    keys = ClusterKeys(Config(key_file=path), wall=lambda: 1700000000.0)
    auth = keys.auth
    assert auth is not None and keys.path == path
    assert keys.ids() == {"signing": ident(old), "accepted": [ident(old)]}
    write_keys(path, new, old)  # a rotation's second step: sign with the new key, still accept the old
    keys.reload(Config(key_file=path, max_clock_skew=7.0))
    assert keys.auth is auth and auth.max_skew == 7.0  # the same replay window: a reload is no restart
    assert keys.ids() == {"signing": ident(new), "accepted": [ident(new), ident(old)]}


def test_a_key_file_that_cannot_be_read_keeps_the_keys_in_force(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    key = gen_key()
    path = tmp_path / "cluster.key"
    write_keys(path, key)
    keys = ClusterKeys(Config(key_file=path))
    write_keys(path, gen_key(), mode=0o644)  # readable by others: refused
    with caplog.at_level(logging.ERROR, "omdisc"):
        keys.reload(Config(key_file=path))
    assert "reload of the key file failed, the keys in force stay" in caplog.text
    assert keys.ids() == {"signing": ident(key), "accepted": [ident(key)]}


def test_without_a_key_file_nothing_is_signed_and_that_is_said(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cluster.key"
    write_keys(path, gen_key())
    keys = ClusterKeys(Config(key_file=path))
    with caplog.at_level(logging.WARNING, "omdisc"):
        keys.reload(Config())  # key_file no longer named, and no default key file
    assert keys.auth is None and keys.ids() is None
    assert "no cluster key: announcements are not authenticated" in caplog.text
