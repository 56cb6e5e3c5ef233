"""Where the cluster key comes from, and how the packaged unit hands it to an unprivileged service.

The key file (`key_file`, default /etc/omdiscd/cluster.key when present) is readable by root only.
The systemd unit runs the daemon as an unprivileged user, so `omdiscd --stage-key`, run as root by
ExecStartPre=+ and ExecReload=+, checks the key file and puts a copy that only the service's user
can read into the service's runtime directory; the daemon reads that copy. systemd credentials
(LoadCredential=) would do the same at start, but cannot change on reload: keys could then not
rotate without a restart, and a restart takes the node out of every map for a moment.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

from omdisc.core.auth import KEY_SIZE, KeyFileError, Keyring, parse_keys
from omdisc.core.config import DEFAULT_KEY_FILE, Config
from omdisc.shell.files import make_temp

STAGED = "cluster.key"


def gen_key() -> str:
    """One new key line: 32 random bytes, base64."""
    return base64.b64encode(secrets.token_bytes(KEY_SIZE)).decode()


def load_keyring(path: Path) -> Keyring:
    """The key file, refused when others than its owner may read it or its owner is someone else
    than root or us (as ssh refuses a private key)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        if st.st_uid not in (0, os.geteuid()):
            raise KeyFileError(f"key file {path} belongs to uid {st.st_uid}, neither root nor this process's user")
        if st.st_mode & 0o077:
            raise KeyFileError(f"key file {path} may be read by others than its owner (mode "
                               f"{stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}")
        try:
            text = f.read(65536).decode("ascii")
        except UnicodeDecodeError:
            raise KeyFileError(f"key file {path} is not text (make a key with: omdiscd --gen-key)") from None
    return parse_keys(text, str(path))


def _runtime_dir() -> Path | None:
    runtime = os.environ.get("RUNTIME_DIRECTORY", "")
    return Path(runtime.split(":")[0]) if runtime else None


def source(cfg: Config) -> Path | None:
    """The key file the configuration names; None: no key file (not authenticated)."""
    if cfg.key_file is not None:
        return cfg.key_file
    return DEFAULT_KEY_FILE if DEFAULT_KEY_FILE.exists() else None


def load(cfg: Config) -> tuple[Keyring | None, Path | None]:
    """The keyring in force and the file it was read from: the staged copy under the unit, else the
    key file. A key file that was named must exist."""
    runtime = _runtime_dir()
    staged = runtime / STAGED if runtime else None
    if staged is not None and staged.exists():
        return load_keyring(staged), staged
    path = source(cfg)
    if path is None:
        return None, None
    return load_keyring(path), path


def stage(cfg: Config) -> str:
    """As root, for the unit: check the key file and give the service's user a copy it alone can
    read (or remove the copy when there is no key file). Returns what was done, for the journal."""
    runtime = _runtime_dir()
    if runtime is None or not runtime.is_dir():
        raise KeyFileError("--stage-key is for the systemd unit (ExecStartPre=+): RUNTIME_DIRECTORY is not set")
    staged = runtime / STAGED
    path = source(cfg)
    if path is None:
        staged.unlink(missing_ok=True)
        return "no key file: announcements are not authenticated"
    keyring = load_keyring(path)
    owner = runtime.stat()
    fd, tmp = make_temp(runtime, f".{STAGED}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("".join(base64.b64encode(k).decode() + "\n" for k in keyring.keys))
        os.chmod(tmp, 0o400)
        os.chown(tmp, owner.st_uid, owner.st_gid)
        os.replace(tmp, staged)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return f"{len(keyring.keys)} key(s) from {path} (ids {keyring.describe()}) handed to the service"
