"""DocBook HTML (the Debian handbook and reference) to plain-text blocks.

Blocks rather than one string because two callers need the structure: the reference is cut into one document per
section at its <h2> headings, and a translated page is filtered against its English original block by block (the
translations are partial, and an untranslated paragraph would otherwise land in the wrong language's file). Such a
paragraph is not always the English one byte for byte: its cross-references ("Section 10.2" becomes "Τμήμα 10.2")
and labels are translated. So blocks are compared by how many of their words, outside links, the English page has.
"""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser

# Navigation, tables of contents and index anchors repeat text that is elsewhere (or is not prose at all).
_SKIPPED_TAGS = frozenset({"head", "script", "style", "noscript"})
_SKIPPED_CLASSES = frozenset(
  {
    "toc",
    "docnav",
    "navheader",
    "navfooter",
    "list-of-tables",
    "list-of-figures",
    "list-of-examples",
    "list-of-equations",
    "indexterm",
  }
)
_SKIPPED_IDS = frozenset({"banner", "title"})  # the handbook's "Download the ebook" banner and logo row
_BLOCK_TAGS = frozenset(
  {
    "p",
    "div",
    "pre",
    "li",
    "dt",
    "dd",
    "tr",
    "table",
    "br",
    "blockquote",
    "ul",
    "ol",
    "dl",
    "hr",
    "section",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "caption",
    "figure",
  }
)
_CELL_TAGS = frozenset({"td", "th"})
_WORD = re.compile(r"\w+")
UNTRANSLATED_WORD_SHARE = 0.6


@dataclasses.dataclass(frozen=True)
class Block:
  text: str
  preformatted: bool = False
  heading_level: int = 0
  """1..6 for <h1>..<h6>, 0 for anything else."""
  unlinked: str = ""
  """The text outside <a> elements: what an untranslated paragraph shares with its original."""


class _BlockParser(HTMLParser):
  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.blocks: list[Block] = []
    self._parts: list[str] = []
    self._unlinked_parts: list[str] = []
    self._link_depth = 0
    self._skip_tag: str | None = None
    self._skip_depth = 0
    self._pre_depth = 0
    self._heading_level = 0

  def _flush(self) -> None:
    raw, unlinked = "".join(self._parts), " ".join("".join(self._unlinked_parts).split())
    self._parts, self._unlinked_parts = [], []
    text = raw.strip("\n") if self._pre_depth else " ".join(raw.split())
    if text.strip():
      self.blocks.append(Block(text, self._pre_depth > 0, self._heading_level, unlinked))

  def handle_starttag(self, tag, attrs):
    if self._skip_tag is not None:
      self._skip_depth += tag == self._skip_tag
      return
    attributes = dict(attrs)
    classes = set((attributes.get("class") or "").split())
    if tag in _SKIPPED_TAGS or classes & _SKIPPED_CLASSES or attributes.get("id") in _SKIPPED_IDS:
      self._skip_tag, self._skip_depth = tag, 1
      return
    if tag in _BLOCK_TAGS:
      self._flush()
      if tag == "pre":
        self._pre_depth += 1
      if tag[0] == "h" and tag[1:].isdigit():
        self._heading_level = int(tag[1:])
    elif tag in _CELL_TAGS:
      self._parts.append(" ")
      self._unlinked_parts.append(" ")
    elif tag == "a":
      self._link_depth += 1

  def handle_startendtag(self, tag, attrs):
    # XHTML void elements (<br/>, <img/>, <a id=".."/>) open and close at once: no depth to track.
    if self._skip_tag is None and tag in _BLOCK_TAGS:
      self._flush()

  def handle_endtag(self, tag):
    if self._skip_tag is not None:
      if tag == self._skip_tag:
        self._skip_depth -= 1
        if self._skip_depth == 0:
          self._skip_tag = None
      return
    if tag in _BLOCK_TAGS:
      self._flush()
      if tag == "pre" and self._pre_depth:
        self._pre_depth -= 1
      if tag[0] == "h" and tag[1:].isdigit():
        self._heading_level = 0
    elif tag == "a" and self._link_depth:
      self._link_depth -= 1

  def handle_data(self, data):
    if self._skip_tag is None:
      self._parts.append(data)
      if not self._link_depth:
        self._unlinked_parts.append(data)


def html_blocks(html: str) -> list[Block]:
  """The text blocks of an HTML page, in reading order, without navigation, tables of contents or <head>."""
  parser = _BlockParser()
  parser.feed(html)
  parser.close()
  parser._flush()
  return parser.blocks


def _words(text: str) -> list[str]:
  return [w for w in _WORD.findall(text.lower()) if not w.isdigit()]


def drop_untranslated(blocks: list[Block], english: list[Block]) -> list[Block]:
  """`blocks` less the prose blocks left in English: those with UNTRANSLATED_WORD_SHARE of their words (outside links)
  in the prose of the English original `english`.

  Measured on the handbook, translated paragraphs share under 50% of their words with the English page (commands,
  names, cognates) and untranslated ones over 80% (their labels, "Παράδειγμα 5.2." for "Example 5.2.", aside).
  A preformatted block (commands, program output: the same in every language) follows the prose block before it:
  it stays after a translated paragraph and goes with an untranslated one, so a page whose prose is all English does
  not survive as a page of shell sessions.
  """
  vocabulary = {w for b in english if not b.preformatted for w in _words(b.unlinked or b.text)}
  kept, translated = [], False
  for block in blocks:
    words = [] if block.preformatted else _words(block.unlinked or block.text)
    if words:
      translated = sum(w in vocabulary for w in words) < UNTRANSLATED_WORD_SHARE * len(words)
    if translated:
      kept.append(block)
  return kept


def split_sections(blocks: list[Block], level: int) -> list[list[Block]]:
  """Cut before every heading of `level`; the part before the first such heading is a section of its own."""
  sections: list[list[Block]] = [[]]
  for block in blocks:
    if block.heading_level == level and sections[-1]:
      sections.append([])
    sections[-1].append(block)
  return [s for s in sections if s]


def blocks_text(blocks: list[Block]) -> str:
  return "\n\n".join(b.text for b in blocks)
