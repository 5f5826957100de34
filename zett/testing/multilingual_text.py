"""Offline multilingual test text for the tokenizer tests: stdlib code plus generated lines in
Latin, Cyrillic, Greek, CJK, Arabic, Hebrew, Devanagari, Thai scripts, emoji and odd whitespace."""

from __future__ import annotations

import functools
import random
import sysconfig
from pathlib import Path

SENTENCES = (
  "The quick brown fox jumps over the lazy dog.",
  "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
  "Le cœur déçu mais l'âme plutôt naïve, Louÿs rêva de crapaüter en canoë.",
  "¿Dónde está el pingüino? Él comió ñoquis con jamón.",
  "Съешь же ещё этих мягких французских булок, да выпей чаю.",
  "Широкая электрификация южных губерний даст мощный толчок подъёму сельского хозяйства.",
  "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
  "我能吞下玻璃而不伤身体。今天天气很好，我们去公园散步吧。",
  "いろはにほへと ちりぬるを わかよたれそ つねならむ。東京は日本の首都です。",
  "다람쥐 헌 쳇바퀴에 타고파. 한국어 문장을 토큰화합니다.",
  "نص حكيم له سر قاطع وذو شأن عظيم مكتوب على ثوب أخضر ومغلف بجلد أزرق.",
  "דג סקרן שט בים מאוכזב ולפתע מצא חברה.",
  "ऋषियों को सताने वाले दुष्ट राक्षसों के राजा रावण का सर्वनाश करने वाले विष्णुवतार भगवान श्रीराम।",
  "เป็นมนุษย์สุดประเสริฐเลิศคุณค่า กว่าบรรดาฝูงสัตว์เดรัจฉาน",
  "Pchnąć w tę łódź jeża lub ośm skrzyń fig.",
  "Árvíztűrő tükörfúrógép; Příliš žluťoučký kůň úpěl ďábelské ódy.",
  "Emoji: 🤖🚀✨ 👩‍💻 🏳️‍🌈 👍🏽 — family 👨‍👩‍👧‍👦 and flags 🇩🇪🇯🇵.",
  "Numbers 1234567890, 3.14159, -42, 1e-9, ½ ¾ ² ³ Ⅻ and ١٢٣ ٤٥٦.",
)

ODD_WHITESPACE = ("\t", "  ", "   ", "\u00a0", "\u3000", "\u2009", "\u200b", "\r\n", "\n\n", " \t ", "\u2028", "\x0b")


@functools.cache
def stdlib_lines(limit: int = 3000) -> tuple[str, ...]:
  """Non-empty lines of Python standard library source files (code, docstrings, odd indentation)."""
  stdlib = Path(sysconfig.get_paths()["stdlib"])
  lines: list[str] = []
  for path in sorted(stdlib.glob("*.py")):
    try:
      text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
      continue
    lines.extend(line for line in text.splitlines() if line.strip())
    if len(lines) >= limit:
      break
  return tuple(lines[:limit])


@functools.cache
def multilingual_lines(count: int = 3000, seed: int = 0, random_code_points: bool = True) -> tuple[str, ...]:
  """Generated lines mixing scripts, random code points (optional), emoji and odd whitespace."""
  rng = random.Random(seed)
  ranges = [
    (0x20, 0x7E),
    (0xA0, 0x17F),
    (0x400, 0x4FF),
    (0x370, 0x3FF),
    (0x4E00, 0x9FFF),
    (0x3040, 0x30FF),
    (0x600, 0x6FF),
    (0x590, 0x5FF),
    (0x900, 0x97F),
    (0xE00, 0xE7F),
    (0x1F300, 0x1FAFF),
    (0xAC00, 0xD7A3),
  ]
  lines = []
  for _ in range(count):
    parts = []
    for _ in range(rng.randint(1, 4)):
      choice = rng.random()
      if choice < 0.6:
        sentence = rng.choice(SENTENCES)
        start = rng.randint(0, len(sentence) // 2)
        parts.append(sentence[start : start + rng.randint(5, 80)])
      elif choice < 0.8 and random_code_points:
        low, high = rng.choice(ranges)
        parts.append("".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 12))))
      else:
        parts.append(rng.choice(ODD_WHITESPACE) * rng.randint(1, 3))
    lines.append(rng.choice(ODD_WHITESPACE + ("", " ", "")).join(parts))
  return tuple(line for line in lines if line)


def test_lines(count: int = 5200) -> list[str]:
  """At least `count` lines: half stdlib code, half generated multilingual text."""
  code = list(stdlib_lines(count // 2))
  return code + list(multilingual_lines(count - len(code) + 200))[: count - len(code)]


test_lines.__test__ = False  # not a pytest test
