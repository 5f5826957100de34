"""The Debian packages that feed the corpus: which languages each one gives, whether it is installed, its files.

Files are found through dpkg's own lists (`var/lib/dpkg/info/<package>.list`) rather than by walking /usr/share:
the layouts differ per package (fortunes-zh writes into the fortunes root, fortunes-it adds root-level symlinks,
fortunes-cs a `cz/` folder of symlinks, debian-reference puts its HTML in /usr/share/debian-reference), and a list
names exactly the files of the package whose version goes into the recipe. Every path is read below `root`, so tests
point the whole thing at a fake tree that holds a small dpkg database.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Literal

from zett.errors import ZettError

Kind = Literal["handbook", "reference", "man", "fortunes"]

# The handbook's folders (html/<locale>/) and their ISO 639-1 codes; both Chinese scripts are "zh".
HANDBOOK_LOCALES = {
  "ar-MA": "ar",
  "ca-ES": "ca",
  "cs-CZ": "cs",
  "da-DK": "da",
  "de-DE": "de",
  "el-GR": "el",
  "en-US": "en",
  "es-ES": "es",
  "fa-IR": "fa",
  "fr-FR": "fr",
  "hr-HR": "hr",
  "id-ID": "id",
  "it-IT": "it",
  "ja-JP": "ja",
  "ko-KR": "ko",
  "nb-NO": "nb",
  "nl-NL": "nl",
  "pl-PL": "pl",
  "pt-BR": "pt",
  "ro-RO": "ro",
  "ru-RU": "ru",
  "sv-SE": "sv",
  "tr-TR": "tr",
  "vi-VN": "vi",
  "zh-CN": "zh",
  "zh-TW": "zh",
}

# /usr/share/man/<folder>/ of the translated man-page packages, and their ISO 639-1 codes.
MAN_LOCALES = {
  "de": "de",
  "el": "el",
  "es": "es",
  "fr": "fr",
  "it": "it",
  "ja": "ja",
  "mk": "mk",
  "nl": "nl",
  "pl": "pl",
  "ru": "ru",
  "sr": "sr",
  "uk": "uk",
  "zh_CN": "zh",
  "zh_TW": "zh",
}

CODE_LANGUAGE = "python"
"""The `language` of the standard-library code documents; selecting it needs no Debian package."""


@dataclasses.dataclass(frozen=True)
class Package:
  name: str
  kind: Kind
  languages: tuple[str, ...]
  needs: tuple[str, ...] = ()
  """Other packages this one is read against (a translation is filtered against its English original)."""


def _one_per_language(kind: Kind, prefix: str, codes: dict[str, str], needs: tuple[str, ...] = ()) -> list[Package]:
  """Packages named `prefix + code`, one per language; `codes` maps the code in the name to ISO 639-1."""
  return [Package(prefix + code, kind, (language,), needs) for code, language in codes.items()]


def _same(*codes: str) -> dict[str, str]:
  return {code: code for code in codes}


PACKAGES: tuple[Package, ...] = (
  Package("debian-handbook", "handbook", tuple(sorted(set(HANDBOOK_LOCALES.values())))),
  Package("debian-reference-en", "reference", ("en",)),
  *_one_per_language(
    "reference",
    "debian-reference-",
    {**_same("de", "es", "fr", "it", "ja", "pt"), "zh-cn": "zh"},
    needs=("debian-reference-en",),
  ),
  # English man pages: manpages has sections 1, 4, 5, 7 and 8; manpages-dev the system calls and C library (2, 3).
  Package("manpages", "man", ("en",)),
  Package("manpages-dev", "man", ("en",)),
  *_one_per_language(
    "man", "manpages-", _same("de", "el", "es", "fr", "it", "ja", "mk", "nl", "pl", "ru", "sr", "uk", "zh")
  ),
  *_one_per_language("fortunes", "fortunes-", _same("bg", "cs", "de", "es", "it", "pl", "ru", "zh")),
)
"""In the order documents are read (dedup keeps the first copy, so this order decides which source a shared
document is credited to)."""

KNOWN_LANGUAGES: tuple[str, ...] = (CODE_LANGUAGE, *sorted({lang for p in PACKAGES for lang in p.languages}))


class CorpusError(ZettError, ValueError):
  """The corpus cannot be built as asked; the message says what to do (the CLI prints it as one line)."""


def packages_for(languages: tuple[str, ...]) -> list[Package]:
  """The packages that give any of `languages`, plus those they are read against, in PACKAGES order."""
  wanted = {p.name for p in PACKAGES if set(p.languages) & set(languages)}
  wanted |= {need for p in PACKAGES if p.name in wanted for need in p.needs}
  return [p for p in PACKAGES if p.name in wanted]


def installed_versions(root: str) -> dict[str, str]:
  """Package -> version of every installed package, from `<root>/var/lib/dpkg/status` ({} when there is none)."""
  path = os.path.join(root, "var/lib/dpkg/status")
  if not os.path.isfile(path):
    return {}
  versions = {}
  with open(path, encoding="utf-8", errors="replace") as f:
    for stanza in f.read().split("\n\n"):
      fields = dict(line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith(" "))
      fields = {k.strip(): v.strip() for k, v in fields.items()}
      if fields.get("Status", "").endswith(" installed") and "Package" in fields:
        versions[fields["Package"]] = fields.get("Version", "")
  return versions


def check_installed(root: str, languages: tuple[str, ...]) -> dict[str, str]:
  """Versions of the packages `languages` need; raises CorpusError naming the languages and the one install command."""
  versions = installed_versions(root)
  needed = packages_for(languages)
  missing = [p for p in needed if p.name not in versions]
  if missing:
    missing_names = {p.name for p in missing}
    affected = sorted(
      {
        lang
        for p in needed
        if p.name in missing_names or missing_names & set(p.needs)
        for lang in p.languages
        if lang in languages
      }
    )
    raise CorpusError(
      f"missing Debian packages for languages {', '.join(affected)} "
      f"(or leave those out with --languages): sudo apt-get install -y "
      f"{' '.join(p.name for p in missing)}"
    )
  return {p.name: versions[p.name] for p in needed}


def package_files(root: str, name: str) -> list[str]:
  """The regular files (not folders, not symlinks) a package installed, as absolute paths inside the system, sorted.

  Symlinks are left out: they point at files listed in their own right (fortunes-cs's cz/ -> cs/), and reading
  them would only make duplicates.
  """
  info = host_path(root, "/var/lib/dpkg/info")
  lists = sorted(
    glob.glob(os.path.join(info, glob.escape(name) + ".list"))
    + glob.glob(os.path.join(info, glob.escape(name) + ":*.list"))
  )  # name:arch.list for multi-arch
  if not lists:
    raise CorpusError(
      f"package {name} is installed but {info}/{name}.list is missing; "
      f"reinstall it: sudo apt-get install --reinstall -y {name}"
    )
  files = set()
  for list_path in lists:
    with open(list_path, encoding="utf-8", errors="surrogateescape") as f:
      for line in f:
        path = line.rstrip("\n")
        on_disk = host_path(root, path)
        if path.startswith("/") and not os.path.islink(on_disk) and os.path.isfile(on_disk):
          files.add(path)
  return sorted(files)


def host_path(root: str, path: str) -> str:
  """Where the system path `path` lies under `root`."""
  return os.path.join(root, path.lstrip("/"))
