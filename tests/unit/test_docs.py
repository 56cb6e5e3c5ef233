"""The man pages, --help, the shipped config and the code agree; the pages are lint-clean."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from omdisc.cli import build_parser
from omdisc.core.config import Config
from omdisc.core.records import fields
from omdisc.core.yamlconfig import parse
from omdisc.showmap import build_parser as showmap_parser

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man"


def long_options(parser: object) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")}  # type: ignore[attr-defined]


def roff_options(page: str) -> set[str]:
    """Long options named in the OPTIONS section."""
    section = page.split("\n.SH OPTIONS\n", 1)[1].split("\n.SH ", 1)[0]
    return {o.replace("\\-", "-") for o in re.findall(r"\\-\\-[a-z\\-]+[a-z]", section)}


@pytest.mark.parametrize("page", sorted(p.name for p in MAN.iterdir()))
def test_man_pages_are_lint_clean(page: str) -> None:
    r = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", str(MAN / page)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "", r.stdout


def test_omdiscd_help_and_man_page_list_the_same_options() -> None:
    page = (MAN / "omdiscd.8").read_text()
    assert roff_options(page) == long_options(build_parser())


def test_showmap_help_and_man_page_list_the_same_options() -> None:
    page = (MAN / "showmap.1").read_text()
    assert roff_options(page) == long_options(showmap_parser())


def test_config_man_page_documents_every_key() -> None:
    page = (MAN / "omdiscd.yaml.5").read_text()
    keys = page.split("\n.SH KEYS\n", 1)[1].split("\n.SH ", 1)[0]
    documented = set(re.findall(r"^\.TP\n\.B (\w+)$", keys, flags=re.M))
    assert documented == {f.name for f in fields(Config)}


def test_shipped_config_shows_every_key_at_its_default() -> None:
    text = (ROOT / "debian" / "omdiscd.yaml").read_text()
    assert parse(text) == Config()
    assert set(re.findall(r"^(\w+):", text, flags=re.M)) == {f.name for f in fields(Config)}


def test_every_message_id_is_documented_in_the_man_page_and_docs() -> None:
    from omdisc.core import events

    ids = {v for k, v in vars(events).items() if k.isupper() and isinstance(v, str)}
    assert len(ids) == 8
    for doc in (MAN / "omdiscd.8", ROOT / "docs" / "journal.md"):
        text = doc.read_text()
        assert all(i in text for i in ids), doc
