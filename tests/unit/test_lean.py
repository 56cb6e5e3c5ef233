"""What keeps the daemon lean does not change what it does: state.json byte for byte as before, the
cluster key's MACs without OpenSSL; and the omdiscd program does leave out what it never uses."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from ipaddress import ip_address
from pathlib import Path

import pytest

from omdisc import __version__
from omdisc.core.auth import Authenticator, Keyring
from omdisc.core.protocol import Message, MsgType, encode
from omdisc.shell.statefile import MEMBERS_AT_ONCE, encode_state
from tests.bench.lean import engine_with


@pytest.mark.parametrize("members", [0, 1, MEMBERS_AT_ONCE, MEMBERS_AT_ONCE + 1, 1000])
def test_state_json_is_what_json_dumps_writes(members: int) -> None:
    state = engine_with(members).state(200.0)
    state["keys"] = {"signing": "00ff", "accepted": ["00ff", "\u00e9\n\""]}  # nesting and escapes too
    assert len(state["members"]) == members
    assert encode_state(state) == (json.dumps(state, separators=(",", ":")) + "\n").encode()
    lazy = engine_with(members).state(200.0, lazy_members=True)  # as MapWriter asks for it
    lazy["keys"] = state["keys"]
    assert encode_state(lazy) == encode_state(state)


# --- the omdiscd program leaves out what it never uses (omdisc/daemon.py) --------------------------

REPO = Path(__file__).resolve().parents[2]
# systemd.journal and systemd.daemon: the C halves of systemd-python do; typing: for mypy only;
# dataclasses: core/records.py makes our records; ast and dis: what inspect would load; the command
# line's and the YAML files' modules: the front's, in a child (omdisc/front.py); importlib.util:
# shell/lazy.py does without
PARSING = ("yaml", "omdisc.core.yamlconfig", "argparse", "gettext", "omdisc.cli")
LEFT_OUT = ("asyncio", "ssl", "_ssl", "_hashlib", "bz2", "lzma", "tempfile", "shutil", "logging.handlers",
            "omdisc.showmap", "systemd.journal", "systemd.daemon", "uuid", "platform", "typing", "dataclasses",
            "ast", "dis", "importlib.util", *PARSING)
# imported, never run unless used (shell/lazy.py): an executed module has __builtins__
DEFERRED = ("inspect", "hashlib", "hmac", "secrets", "base64", "subprocess", "traceback", "ntpath")
SIGN = """
import sys
from omdisc.daemon import main  # as the omdiscd script starts
from omdisc import __version__
from omdisc.core.auth import Authenticator, Keyring
from omdisc.core.protocol import Message, MsgType, encode
from ipaddress import ip_address
auth = Authenticator(Keyring((bytes(range(32)),)), lambda: 1700000000.0, 5.0, lambda: 0.0)
signed = auth.sign(encode(Message(MsgType.ANNOUNCE, 7, 1, 1, (ip_address("198.18.0.7"),))))
print(signed.hex(), auth.verify(signed, __import__("omdisc.core.protocol").core.protocol.decode(signed)).reason or "ok")
print("openssl" if "libcrypto" in open("/proc/self/maps").read() else "no openssl")
"""

# what ran before the program: python -m's runpy loads importlib.util, and a venv's editable install
# of omdisc loads pathlib (and ntpath) and importlib.util at start-up; a packaged omdiscd, neither
STARTED = """
import sys
ran = {m for m, module in sys.modules.items() if module is not None and "__builtins__" in vars(module)}
"""
LOADED = f"""
try:
    main(["--version"])
except SystemExit:
    pass
maps = open("/proc/self/maps").read()
print(sorted(m for m in {LEFT_OUT!r} if sys.modules.get(m) is not None and m not in ran),
      sorted(lib for lib in ("libssl", "libcrypto") if lib in maps),
      sorted(m for m in {DEFERRED!r} if "__builtins__" in vars(sys.modules.get(m, sys)) and m not in ran))
"""


def run(*command: str) -> str:
    r = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    return r.stdout


def omdiscd_script(tmp_path: Path, body: str = "from omdisc.daemon import main\nsys.exit(main())\n") -> str:
    """A program named omdiscd, as the Debian package's /usr/sbin/omdiscd."""
    script = tmp_path / "omdiscd"
    script.write_text("import sys\n" + body)
    return str(script)


def test_the_omdiscd_program_loads_no_tls_or_openssl(tmp_path: Path) -> None:
    as_module = ("import runpy, sys\nsys.argv[1:] = ['--version']\n" + STARTED +
                 "main = lambda argv: runpy.run_module('omdisc.daemon', run_name='__main__')\n")
    for program in (run("-c", as_module + LOADED),  # python -m omdisc.daemon
                    run(omdiscd_script(tmp_path, STARTED + "from omdisc.daemon import main\n" + LOADED))):
        assert program.splitlines() == [f"omdiscd {__version__}", "[] [] []"], program  # it ran, without them


READ_AND_RELOAD = """
import sys
from pathlib import Path
from omdisc.daemon import main
from omdisc.shell.configfiles import ConfigSource
cfg = Path(sys.argv[-1])
print(main())  # omdiscd -n -c CFG: the files read, then: no such interface, before any socket
source = ConfigSource(cfg, {{"debug": ("net",)}})
print(source.reread().interfaces, source.reread().debug)  # what SIGHUP reads
cfg.write_text("interfaces: [omdt-none0]\\nport: lots\\n")
try:
    source.reread()
except Exception as e:
    print(type(e).__name__, e)
print(sorted(m for m in {parsing!r} if m in sys.modules))
"""


def test_the_omdiscd_program_reads_its_files_at_start_and_reload_without_loading_yaml_or_argparse(
        tmp_path: Path) -> None:
    cfg = tmp_path / "omdiscd.yaml"
    cfg.write_text("interfaces: [omdt-none0]\n")
    r = subprocess.run([sys.executable, omdiscd_script(tmp_path, READ_AND_RELOAD.format(parsing=PARSING)), "-n", "-c",
                        str(cfg)],
                       capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                       check=True)
    assert r.stdout.splitlines() == ["1", "('omdt-none0',) ('net',)",
                                     f"ConfigError {cfg}:2: port: expected an integer 1..65535, got 'lots'", "[]"]
    assert r.stderr.startswith("omdiscd: ") and len(r.stderr.splitlines()) == 1, r.stderr


def test_a_program_that_imports_the_daemon_module_keeps_ssl() -> None:
    assert run("-c", "import sys, omdisc.daemon, asyncio, ssl; print(sys.modules['ssl'] is not None)") == "True\n"


def test_the_cluster_key_macs_are_the_same_without_openssl(tmp_path: Path) -> None:
    out = run(omdiscd_script(tmp_path, SIGN))
    signed, verdict, openssl = out.replace("\n", " ").split(maxsplit=2)
    assert (verdict, openssl.strip()) == ("ok", "no openssl"), out
    auth = Authenticator(Keyring((bytes(range(32)),)), lambda: 1700000000.0, 5.0, lambda: 0.0)  # with OpenSSL, here
    assert signed == auth.sign(encode(Message(MsgType.ANNOUNCE, 7, 1, 1, (ip_address("198.18.0.7"),)))).hex()


def test_journal_fields_are_what_systemd_journal_send_made() -> None:
    """omdisc.shell.journal calls systemd-python's C sendv() itself: the same FIELD=value entries as its
    Python send() made, str as text, bytes as they are, numbers by str()."""
    from omdisc.shell.journal import journal_fields
    assert journal_fields({"MESSAGE": "node #3 joined\nsecond line", "PRIORITY": 6, "CODE_LINE": 12,
                           "OMDISC_BLOB": b"\xde\xad", "OMDISC_PEER": "198.18.0.3"}) == [
        "MESSAGE=node #3 joined\nsecond line", "PRIORITY=6", "CODE_LINE=12", b"OMDISC_BLOB=\xde\xad",
        "OMDISC_PEER=198.18.0.3"]


DEFER = """
import sys
from omdisc.shell.lazy import defer
defer("secrets", "hmac", "colorsys")
import colorsys, hmac, secrets
print("__builtins__" in vars(secrets), "__builtins__" in vars(hmac))
from hmac import compare_digest
print(len(secrets.token_bytes(8)), compare_digest(b"a", b"a"), sys.modules["secrets"] is secrets)
print(colorsys.rgb_to_hsv(1.0, 0.0, 0.0), "__getattr__" in vars(colorsys))
"""


def test_a_deferred_module_runs_at_its_first_use_and_is_then_itself() -> None:
    assert run("-c", DEFER).splitlines() == ["False False", "8 True True", "(0.0, 1.0, 1.0) False"]


def test_typing_is_imported_for_mypy_only() -> None:
    """Annotations are strings (from __future__ import annotations): no module needs typing when it runs."""
    found = []
    for path in sorted((REPO / "omdisc").rglob("*.py")):
        tree = ast.parse(path.read_text())
        guarded = {id(n) for block in tree.body if isinstance(block, ast.If) and ast.unparse(block.test) ==
                   "TYPE_CHECKING" for n in ast.walk(block)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in guarded
                    and "typing" in ([node.module] if isinstance(node, ast.ImportFrom) else
                                     [a.name for a in node.names])):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []
