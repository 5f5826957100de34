"""roff escapes to text: glyph names (\\(xx, \\[xx]), predefined strings (\\*x), character numbers (\\N'n'), font,
size and motion escapes (dropped), and comments. `zett.data.roff_text` renders the requests and macros around them.
"""

from __future__ import annotations

import re

# Glyphs by roff name (\(xx, \[xx]); names not here render as nothing.
_GLYPHS = {
  "em": "—",
  "en": "–",
  "hy": "-",
  "mi": "-",
  "aq": "'",
  "dq": '"',
  "lq": "“",
  "rq": "”",
  "oq": "‘",
  "cq": "’",
  "Fo": "«",
  "Fc": "»",
  "fo": "‹",
  "fc": "›",
  "bu": "•",
  "co": "©",
  "rg": "®",
  "tm": "™",
  "mu": "×",
  "di": "÷",
  "de": "°",
  "+-": "±",
  "<=": "≤",
  ">=": "≥",
  "!=": "≠",
  "->": "→",
  "<-": "←",
  "==": "≡",
  "ga": "`",
  "ha": "^",
  "ti": "~",
  "rs": "\\",
  "sl": "/",
  "ba": "|",
  "br": "|",
  "ul": "_",
  "ru": "_",
  "sc": "§",
  "ps": "¶",
  "dg": "†",
  "Eu": "€",
  "eu": "€",
  "Po": "£",
  "ct": "¢",
  "Ye": "¥",
  "ss": "ß",
  "a:": "ä",
  "o:": "ö",
  "u:": "ü",
  "A:": "Ä",
  "O:": "Ö",
  "U:": "Ü",
  "'e": "é",
  "`e": "è",
  "'E": "É",
  "^e": "ê",
  ",c": "ç",
  "~n": "ñ",
  "aa": "´",
  "at": "@",
  "sh": "#",
  "Do": "$",
  "lB": "[",
  "rB": "]",
  "lC": "{",
  "rC": "}",
  "la": "⟨",
  "ra": "⟩",
  "or": "|",
  "pl": "+",
  "eq": "=",
  "**": "∗",
  "fm": "′",
  "sd": "″",
  "ua": "↑",
  "da": "↓",
  "rA": "⇒",
  "lA": "⇐",
  "hA": "⇔",
  "sq": "□",
  "ci": "○",
  "OK": "✓",
  "if": "∞",
  "pt": "∝",
  "es": "∅",
  "mo": "∈",
  "nm": "∉",
  "sr": "√",
  "ap": "~",
  "~~": "≈",
}
# Strings (\*x, \*(xx, \*[xx]) the man and mdoc packages predefine; others render as nothing.
_STRINGS = {"R": "®", "Tm": "™", "lq": "“", "rq": "”", "aq": "'", "S": "", "Lq": "“", "Rq": "”"}
# One-character escapes that print something; every other one is zero-width or a layout hint.
_PLAIN_ESCAPES = {
  "-": "-",
  "e": "\\",
  "E": "\\",
  "\\": "\\",
  " ": " ",
  "~": " ",
  "0": " ",
  "t": "\t",
  "'": "´",
  "`": "`",
  ".": ".",
  "_": "_",
}

_ESCAPE = re.compile(
  r"""\\(?:
    \((?P<paren>..) | \[(?P<bracket>[^\]]*)\]
  | \*(?:\((?P<string2>..)|\[(?P<stringb>[^\]]*)\]|(?P<string1>.))
  | N'(?P<number>\d+)'
  | [fFgmMnYV](?:\(..|\[[^\]]*\]|.)
  | s[-+]?(?:\(..|\[[^\]]*\]|'[^']*'|[0-9])
  | [hvwloLDXbxSRZAB](?P<quote>['|]).*?(?P=quote)
  | k.
  | (?P<single>.)
)""",
  re.X,
)
_COMMENT = re.compile(r'\\".*$|\\#.*$')


def _escape(match: re.Match) -> str:
  if match["paren"] is not None:
    return _GLYPHS.get(match["paren"], "")
  if match["bracket"] is not None:
    name = match["bracket"]
    if re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
      return chr(int(name[1:], 16))
    return _GLYPHS.get(name, "")
  string = match["string2"] or match["stringb"] or match["string1"]
  if string is not None:
    return _STRINGS.get(string, "")
  if match["number"] is not None:
    return chr(int(match["number"])) if int(match["number"]) < 0x110000 else ""
  if match["single"] is not None:
    return _PLAIN_ESCAPES.get(match["single"], "")
  return ""


def render_escapes(line: str) -> str:
  """A line with its comments removed and its escapes rendered."""
  return _ESCAPE.sub(_escape, _COMMENT.sub("", line))
