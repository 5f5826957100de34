"""Manual pages (roff source, man and mdoc macros) to plain text, without groff.

groff and man are often absent (minimal images, CI) and are slow per page; the corpus needs readable running text,
not a faithful layout. So: requests that only steer layout are dropped, font and glyph escapes become their
characters, section headings and list tags become lines of their own, and filled text is joined into paragraphs.
Tables keep their rows, equations and macro definitions are dropped.

Escapes inside a line are rendered by `zett.data.roff_escapes`; this module renders requests, macros and tables.
"""

from __future__ import annotations

import re
import unicodedata

from zett.data.roff_escapes import render_escapes

_HEADINGS = frozenset({"SH", "SS", "Sh", "Ss"})
_PARAGRAPHS = frozenset({"PP", "LP", "P", "Pp", "Lp", "sp", "HP", "ns", "bp", "Bl", "El", "Bd", "Ed", "SY", "YS"})
_LINE_BREAKS = frozenset({"br", "TQ", "It", "Dl"})
_ALTERNATING_FONTS = frozenset({"BR", "BI", "IB", "IR", "RB", "RI"})
_NO_FILL, _FILL = frozenset({"nf", "EX", "Vb"}), frozenset({"fi", "EE", "Ve"})  # Vb/Ve: pod2man verbatim
_DROPPED_WITH_BODY = {"de": "..", "de1": "..", "am": "..", "ig": "..", "EQ": ".EN"}
# Page headers and mdoc bookkeeping: no running text.
_DROPPED_MACROS = frozenset(
  {
    "TH",
    "Dd",
    "Dt",
    "Os",
    "UC",
    "PD",
    "RS",
    "RE",
    "IX",
    "Sm",
    "Bk",
    "Ek",
    "Xo",
    "Xc",
    "Ns",
    "Pf",
    "Db",
    "ad",
    "na",
    "nh",
    "hy",
    "ne",
    "ft",
    "in",
    "ti",
    "ll",
    "ta",
    "ds",
    "nr",
    "so",
    "mso",
    "rm",
    "rn",
    "tr",
    "cc",
    "c2",
    "ec",
    "eo",
    "ps",
    "vs",
    "ls",
    "pl",
    "mk",
    "rt",
    "ev",
    "lf",
    "if",
    "ie",
    "el",
    "ce",
    "ul",
    "cu",
    "fam",
    "fcolor",
    "gcolor",
    "pc",
    "lt",
    "po",
    "tl",
    "cs",
    "ss",
    "fp",
    "char",
    "hw",
    "hc",
    "nx",
    "ab",
    "tm",
    "do",
  }
)
# mdoc words that name a macro inside a macro line ("Op Fl a Ar file"); dropped from the rendered arguments.
_MDOC_CALLABLE = frozenset(
  {
    "Ac",
    "Ao",
    "Ap",
    "Aq",
    "Ar",
    "Bc",
    "Bo",
    "Bq",
    "Brc",
    "Bro",
    "Brq",
    "Cm",
    "Dc",
    "Do",
    "Dq",
    "Dv",
    "Ec",
    "Em",
    "Eo",
    "Er",
    "Ev",
    "Fa",
    "Fc",
    "Fl",
    "Fn",
    "Fo",
    "Ft",
    "Ic",
    "Li",
    "Nm",
    "No",
    "Ns",
    "Oc",
    "Oo",
    "Op",
    "Pa",
    "Pc",
    "Pf",
    "Po",
    "Pq",
    "Qc",
    "Ql",
    "Qo",
    "Qq",
    "Sc",
    "So",
    "Sq",
    "Sx",
    "Sy",
    "Ta",
    "Tn",
    "Va",
    "Xr",
  }
)


def _arguments(rest: str) -> list[str]:
  """Macro arguments: blank-separated, double quotes group ("" inside quotes is one quote)."""
  args, i = [], 0
  while i < len(rest):
    if rest[i] in " \t":
      i += 1
    elif rest[i] == '"':
      j, arg = i + 1, []
      while j < len(rest):
        if rest[j] == '"':
          if rest[j + 1 : j + 2] == '"':
            arg.append('"')
            j += 2
            continue
          break
        arg.append(rest[j])
        j += 1
      args.append("".join(arg))
      i = j + 1
    else:
      j = i
      while j < len(rest) and rest[j] not in " \t":
        j += 1
      args.append(rest[i:j])
      i = j
  return args


def _wide(char: str) -> bool:
  return unicodedata.east_asian_width(char) in "WF"


class _Renderer:
  def __init__(self):
    self.lines: list[str] = []
    self.paragraph = ""
    self.fill = True
    self.tag_pending = False
    self.join_next = False

  def text(self, text: str, glue: bool = False) -> None:
    if not self.fill:
      self.lines.append(text)
      return
    if not text.strip():
      return
    text = text.strip()
    # Filled lines are joined with a space, except where Chinese or Japanese text runs on (no spaces between words).
    if self.paragraph and not (glue or self.join_next or (_wide(self.paragraph[-1]) and _wide(text[0]))):
      self.paragraph += " "
    self.paragraph += text
    self.join_next = False
    if self.tag_pending:
      self.tag_pending = False
      self.flush()

  def flush(self) -> None:
    if self.paragraph:
      self.lines.append(self.paragraph)
      self.paragraph = ""

  def paragraph_break(self) -> None:
    self.flush()
    if self.lines and self.lines[-1]:
      self.lines.append("")

  def macro(self, name: str, args: list[str]) -> None:
    if name in _HEADINGS:
      self.paragraph_break()
      self.text(" ".join(args))
      self.flush()
    elif name in _PARAGRAPHS:
      self.paragraph_break()
    elif name in _LINE_BREAKS:
      self.flush()
      if args:
        self.text(" ".join(a for a in args if a not in _MDOC_CALLABLE))
    elif name == "TP":
      self.paragraph_break()
      self.tag_pending = True
    elif name == "IP":
      self.paragraph_break()
      if args and args[0]:
        self.text(args[0])
    elif name in _ALTERNATING_FONTS:
      self.text("".join(args))
    elif name in _NO_FILL or name in _FILL:
      self.flush()
      self.fill = name in _FILL
    elif name == "OP":
      self.text("[" + " ".join(args) + "]")
    elif name == "Xr" and len(args) >= 2:  # mdoc cross-reference: "Xr comsat 8 ," -> "comsat(8),"
      self.text(f"{args[0]}({args[1]})" + "".join(args[2:]))
    elif name == "Fl":
      self.text(" ".join("-" + a if i == 0 or args[i - 1] == "Fl" else a for i, a in enumerate(args) if a != "Fl"))
    elif name in _DROPPED_MACROS or name[:1].islower():
      return
    elif args:  # B, I, SM, UR, Nm, Nd, Op ... and macros we do not know: their arguments are text
      self.text(" ".join(a for a in args if a not in _MDOC_CALLABLE))


def roff_to_text(source: str) -> str:
  """Plain text of a man page's roff source; a `.so` redirect renders as nothing."""
  renderer = _Renderer()
  lines = iter(source.splitlines())
  for raw in lines:
    while raw.endswith("\\") and not raw.endswith("\\\\"):  # an escaped newline continues the line
      raw = raw[:-1] + next(lines, "")
    if raw[:1] in (".", "'"):
      body = raw[1:].lstrip(" \t")
      if body.startswith(('\\"', "\\#")):
        continue
      name, _, rest = body.partition(" ")
      name, _, tab_rest = name.partition("\t")
      rest = (tab_rest + " " + rest).strip()
      if name in _DROPPED_WITH_BODY:
        end = _DROPPED_WITH_BODY[name]
        for skipped in lines:
          if skipped.strip() == end:
            break
      elif name == "TS":
        _table(lines, renderer)
      elif name:
        renderer.macro(name, _arguments(render_escapes(rest)))
      continue
    glue = raw.endswith("\\c")
    text = render_escapes(raw)
    if renderer.fill and not text.strip():
      renderer.paragraph_break()
    elif renderer.fill and raw[:1] in " \t":  # roff breaks the line before text that starts with blanks
      renderer.flush()
      renderer.text(text)
    else:
      renderer.text(text)
    renderer.join_next = glue
  renderer.flush()
  return "\n".join(renderer.lines)


def _table(lines, renderer: _Renderer) -> None:
  """A tbl table: its options and format lines are dropped, its rows become lines (cells separated by two blanks)."""
  renderer.paragraph_break()
  separator, in_format = "\t", True
  for raw in lines:
    stripped = raw.strip()
    if stripped == ".TE":
      break
    if in_format:
      if stripped.endswith(";"):  # options line, e.g. "allbox tab(:);"
        found = re.search(r"tab\s*\((.)\)", stripped)
        separator = found.group(1) if found else separator
      elif stripped.endswith("."):
        in_format = False
      continue
    if stripped in ("_", "=", "") or stripped.startswith((".", "'")):
      continue
    cells = [render_escapes(c).replace("T{", "").replace("T}", "").strip() for c in raw.split(separator)]
    row = "  ".join(c for c in cells if c)
    if row:
      renderer.lines.append(row)
  renderer.paragraph_break()
