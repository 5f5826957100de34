"""The training corpus, built offline from text any Debian machine can install: `zett data prepare`.

Public surface: `prepare_corpus` (build a corpus folder), `CorpusError` (what went wrong, in one line),
`KNOWN_LANGUAGES` (the codes `--languages` accepts).
"""

from zett.data.corpus import prepare_corpus
from zett.data.packages import KNOWN_LANGUAGES, CorpusError

__all__ = ["CorpusError", "KNOWN_LANGUAGES", "prepare_corpus"]
