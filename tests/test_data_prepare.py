"""`zett data prepare` on a small fake system: a dpkg database, a handbook page, reference sections, man pages, a
fortune file and a few stdlib-like modules. Nothing here reads the real Debian packages (CI machines lack them)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from zett.train.data import is_heldout
from zett.data import CorpusError, prepare_corpus
from zett.data.documents import group_fortunes, split_fortunes
from zett.data.roff_text import roff_to_text

REPO = Path(__file__).resolve().parents[1]
LANGUAGES = "python,en,de"
PACKAGES = ("debian-handbook", "debian-reference-en", "debian-reference-de", "manpages", "manpages-dev",
            "manpages-de", "fortunes-de")

_PROSE_EN = ("The package manager keeps a database of every installed file, so that removing a package removes "
             "exactly what it installed and nothing else. ")
_PROSE_DE = ("Die Paketverwaltung führt eine Datenbank aller installierten Dateien, damit beim Entfernen eines "
             "Pakets genau das verschwindet, was es installiert hat. ")
_UNTRANSLATED = "This paragraph was never translated and must not be filed under German. " * 3


def _html(title: str, *paragraphs: str, sections: tuple[tuple[str, str], ...] = ()) -> str:
  body = "".join(f"<div class='para'>{p}</div>" for p in paragraphs)
  body += "".join(f"<div class='section'><h2 class='title'>{h}</h2><p>{p}</p></div>" for h, p in sections)
  return (f"<?xml version='1.0' encoding='UTF-8'?><html><head><title>{title}</title></head><body>"
          f"<ul class='docnav top'><li>Prev</li><li>Next</li></ul><h1>{title}</h1>{body}"
          f"<div class='toc'><a href='#x'>Table of contents</a></div></body></html>")


_MAN_EN = r""".\" a comment
.TH LS 1 "2022" "GNU coreutils"
.SH NAME
ls \- list directory contents
.SH DESCRIPTION
List information about the FILEs (the current directory by default).
Sort entries alphabetically if none of \fB\-cftuvSUX\fP nor \fB\-\-sort\fP is specified.
.TP
\fB\-a\fR, \fB\-\-all\fR
do not ignore entries starting with \(lq.\(rq
.TP
.BR \-l " (" long )
use a long listing format, with one file per line and its permissions, owner, size and time.
"""

_MAN_DE = r""".TH LS 1 "2022" "GNU coreutils"
.SH BEZEICHNUNG
ls \- Verzeichnisinhalte auflisten
.SH BESCHREIBUNG
Auflistung von Informationen über die DATEIen (Standardvorgabe ist das
aktuelle Verzeichnis). Die Einträge werden alphabetisch sortiert, falls
weder \fB\-cftuvSUX\fP noch \fB\-\-sort\fP angegeben wurden.
.TP
\fB\-a\fP, \fB\-\-all\fP
Einträge nicht ignorieren, die mit \[Fo].\[Fc] beginnen
"""

_MODULE = '"""A stdlib-like module."""\n\n\ndef add(a, b):\n  """Sum of a and b, for the test corpus."""\n' \
          '  return a + b\n\n\ndef scale(values, factor):\n  """Each value times factor."""\n' \
          '  return [value * factor for value in values]\n'


def _write(root: Path, system_path: str, data: bytes | str) -> None:
  path = root / system_path.lstrip("/")
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def make_fake_system(tmp: Path, packages: tuple[str, ...] = PACKAGES) -> tuple[Path, Path]:
  """A fake root (files + dpkg database for `packages`) and a fake stdlib folder."""
  root, stdlib = tmp / "root", tmp / "stdlib"
  handbook = "/usr/share/doc/debian-handbook/html"
  files = {
      "debian-handbook": {
          f"{handbook}/en-US/sect.apt.html": _html("APT", _PROSE_EN * 3, _UNTRANSLATED),
          f"{handbook}/de-DE/sect.apt.html": _html("APT", _PROSE_DE * 3, _UNTRANSLATED),
          f"{handbook}/fr-FR/sect.apt.html": _html("APT", "Le gestionnaire de paquets garde une base. " * 8),
      },
      "debian-reference-en": {"/usr/share/debian-reference/ch01.en.html": _html(
          "Tutorials", _PROSE_EN * 2, sections=(("1.1. Console basics", _PROSE_EN * 3),
                                                 ("1.2. Midnight Commander", _PROSE_EN * 4)))},
      "debian-reference-de": {"/usr/share/debian-reference/ch01.de.html": _html(
          "Einführung", _PROSE_DE * 2, sections=(("1.1. Grundlagen der Konsole", _PROSE_DE * 3),
                                                  ("1.2. Midnight Commander", _PROSE_DE * 4)))},
      "manpages": {"/usr/share/man/man1/ls.1.gz": gzip.compress(_MAN_EN.encode(), mtime=0),
                   "/usr/share/man/man1/dir.1.gz": gzip.compress(b".so man1/ls.1\n", mtime=0)},
      "manpages-dev": {},
      "manpages-de": {"/usr/share/man/de/man1/ls.1.gz": gzip.compress(_MAN_DE.encode(), mtime=0)},
      "fortunes-de": {
          "/usr/share/games/fortunes/de/sprueche": "\n%\n".join(
              f"Spruch {i}: Wer andern eine Grube gräbt, fällt selbst hinein. " * 2 for i in range(40)) + "\n%\n",
          "/usr/share/games/fortunes/de/sprueche.dat": b"\x00\x00\x00\x02binary index",
          "/usr/share/games/fortunes/de/off/derb": "Ein derber Spruch, der nicht in den Korpus gehört. " * 10,
      },
  }
  status = []
  for name in packages:
    listed = ["/."]
    for system_path, data in files[name].items():
      _write(root, system_path, data)
      listed.append(system_path)
    if name == "fortunes-de":  # a symlink, as fortunes-*.u8 are: skipped, its target is listed itself
      link = root / "usr/share/games/fortunes/de/sprueche.u8"
      os.symlink("sprueche", link)
      listed.append("/usr/share/games/fortunes/de/sprueche.u8")
    _write(root, f"/var/lib/dpkg/info/{name}.list", "\n".join(listed) + "\n")
    status.append(f"Package: {name}\nStatus: install ok installed\nVersion: 1.0-{len(name)}\n")
  _write(root, "/var/lib/dpkg/status", "\n".join(status))

  _write(stdlib, "mathlike.py", _MODULE)
  _write(stdlib, "pkg/copy_of_mathlike.py", _MODULE)  # an exact duplicate: kept once
  _write(stdlib, "pkg/tiny.py", "x = 1\n")  # under 200 bytes: dropped
  _write(stdlib, "pkg/latin1.py", "# -*- coding: latin-1 -*-\n".encode() + ('"""Caf\xe9 cr\xe8me."""\n' * 20)
         .encode("latin-1"))
  _write(stdlib, "site-packages/thirdparty.py", _MODULE.replace("stdlib-like", "third-party"))
  return root, stdlib


@pytest.fixture()
def fake_system(tmp_path):
  return make_fake_system(tmp_path)


def _rows(out: Path, name: str) -> list[dict]:
  return pq.read_table(out / name).to_pylist()


def test_build_writes_one_file_per_language_with_the_split_training_uses(fake_system, tmp_path):
  root, stdlib = fake_system
  out = tmp_path / "corpus"
  summary = prepare_corpus(out, languages=LANGUAGES, heldout_permille=500, root=str(root), stdlib_dir=str(stdlib),
                           progress=False)

  assert sorted(p.name for p in out.iterdir()) == ["code-python.parquet", "de.parquet", "en.parquet", "summary.json"]
  splits = set()
  for name, info in summary["files"].items():
    table = pq.read_table(out / name)
    splits |= set(table.column("split").to_pylist())
    assert table.column_names == ["text", "language", "domain", "source", "split"]
    assert pq.ParquetFile(out / name).metadata.row_group(0).column(0).compression == "ZSTD"
    assert info["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    for row in table.to_pylist():
      assert row["split"] == ("heldout" if is_heldout(row["text"], 500) else "train")
      assert len(row["text"].encode()) >= 200
    counts = info["splits"]
    assert sum(c["documents"] for c in counts.values()) == table.num_rows
  assert splits == {"train", "heldout"}
  assert json.loads((out / "summary.json").read_text()) == {k: v for k, v in summary.items() if k != "wall_seconds"}

  de = _rows(out, "de.parquet")
  assert {r["language"] for r in de} == {"de"}
  assert {r["domain"] for r in de} == {"docs", "man", "fortunes"}
  assert not any("never translated" in r["text"] for r in de), "untranslated English paragraph filed as German"
  assert any("«.»" in r["text"] and "-a, --all" in r["text"] for r in de if r["domain"] == "man")
  fortunes = [r for r in de if r["domain"] == "fortunes"]
  assert len(fortunes) >= 2 and all("%" not in r["text"] and "derb" not in r["text"] for r in fortunes)
  sections = sorted(r["source"] for r in de if r["source"].startswith("debian-reference-de:"))
  assert sections == [f"debian-reference-de:/usr/share/debian-reference/ch01.de.html#{i}" for i in range(3)]

  code = _rows(out, "code-python.parquet")
  assert {(r["language"], r["domain"]) for r in code} == {("python", "code")}
  assert sorted(r["source"] for r in code) == ["python-stdlib:mathlike.py", "python-stdlib:pkg/latin1.py"]
  assert "Café crème" in next(r["text"] for r in code if r["source"].endswith("latin1.py"))
  assert summary["dropped"] == {"duplicate": 1, "tiny": 2}  # copy_of_mathlike.py; tiny.py and the .so page
  assert summary["recipe"]["heldout_permille"] == 500
  assert summary["recipe"]["packages"]["fortunes-de"] == "1.0-11"
  assert "fr" not in summary["languages"]


def test_rebuild_is_byte_identical(fake_system, tmp_path):
  root, stdlib = fake_system
  first, second = tmp_path / "a", tmp_path / "b"
  for out in (first, second, first):  # the third build replaces the first in place
    prepare_corpus(out, languages=LANGUAGES, root=str(root), stdlib_dir=str(stdlib), progress=False)
  names = sorted(p.name for p in first.iterdir())
  assert names == sorted(p.name for p in second.iterdir())
  for name in names:
    assert (first / name).read_bytes() == (second / name).read_bytes(), name
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp folders left behind"


def test_rows_are_shuffled_by_text_hash(fake_system, tmp_path):
  root, stdlib = fake_system
  prepare_corpus(tmp_path / "c", languages="de", root=str(root), stdlib_dir=str(stdlib), progress=False)
  texts = [r["text"] for r in _rows(tmp_path / "c", "de.parquet")]
  assert texts == sorted(texts, key=lambda t: hashlib.sha256(t.encode()).digest())


def test_missing_package_names_languages_and_the_install_command(tmp_path):
  root, stdlib = make_fake_system(tmp_path, packages=tuple(p for p in PACKAGES
                                                           if p not in ("fortunes-de", "debian-reference-en")))
  with pytest.raises(CorpusError) as error:
    prepare_corpus(tmp_path / "c", languages=LANGUAGES, root=str(root), stdlib_dir=str(stdlib), progress=False)
  message = str(error.value)
  assert "\n" not in message
  assert "languages de, en" in message
  assert message.endswith("sudo apt-get install -y debian-reference-en fortunes-de")
  assert not (tmp_path / "c").exists()


def test_unknown_language_and_foreign_output_folder_are_refused(fake_system, tmp_path):
  root, stdlib = fake_system
  with pytest.raises(CorpusError, match="unknown language.*xx"):
    prepare_corpus(tmp_path / "c", languages="de,xx", root=str(root), stdlib_dir=str(stdlib), progress=False)
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "notes.txt").write_text("keep me")
  with pytest.raises(CorpusError, match="not a corpus folder"):
    prepare_corpus(tmp_path / "mine", languages="de", root=str(root), stdlib_dir=str(stdlib), progress=False)
  assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_roff_renders_running_text():
  text = roff_to_text(_MAN_EN)
  assert text.splitlines()[:2] == ["NAME", "ls - list directory contents"]
  assert ("List information about the FILEs (the current directory by default). Sort entries alphabetically if "
          "none of -cftuvSUX nor --sort is specified.") in text
  assert "-a, --all\ndo not ignore entries starting with “.”" in text
  assert "-l (long)" in text
  assert "comment" not in text and "GNU coreutils" not in text and "\\" not in text
  assert roff_to_text(".so man1/ls.1\n") == ""
  assert roff_to_text("日本語の\n文章です。\n") == "日本語の文章です。"  # no blank between CJK lines


def test_fortunes_are_grouped_to_about_two_kilobytes():
  fortunes = split_fortunes("first\n%\n\x1b[33m-- coloured\x1b[m\n%\n\n%\nthird\n  line\n")
  assert fortunes == ["first", "-- coloured", "third\n  line"]
  groups = group_fortunes(["x" * 300] * 20, group_bytes=2048)
  assert [g.count("x" * 300) for g in groups] == [7, 7, 6]


def test_cli_runs_end_to_end(fake_system, tmp_path):
  root, stdlib = fake_system
  out = tmp_path / "corpus"
  command = [sys.executable, "-m", "zett", "data", "prepare", "--out", str(out), "--root", str(root),
             "--stdlib", str(stdlib), "--languages", LANGUAGES, "--heldout-permille", "30", "--no-progress"]
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert "de " in result.stdout and "wrote 3 parquet files" in result.stdout
  assert json.loads((out / "summary.json").read_text())["recipe"]["heldout_permille"] == 30

  (root / "var/lib/dpkg/info/manpages-de.list").unlink()
  status = (root / "var/lib/dpkg/status").read_text().replace("Package: manpages-de\n", "Package: gone\n")
  (root / "var/lib/dpkg/status").write_text(status)
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().count("\n") == 0
  assert "sudo apt-get install -y manpages-de" in result.stderr
