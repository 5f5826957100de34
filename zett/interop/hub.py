"""Hub names versus local paths: a spec that can only be a local path is reported missing, not downloaded.

Kept free of heavy imports: tokenizer, model and text loaders all ask before trying the network.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# owner/name or a bare name, as the Hugging Face hub allows them (no file suffix of ours, no path tricks).
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_LOCAL_SUFFIXES = (".json", ".gguf", ".model", ".tiktoken", ".txt", ".jsonl", ".parquet", ".safetensors")


def could_be_hub_name(spec: str | os.PathLike) -> bool:
  """False when `spec` can only mean a local path: it starts with ".", "/" or "~", ends with "/", has a file
  suffix, is not shaped like a repo id, or its first component is an existing local folder ("data/x")."""
  text = str(spec)
  if text.startswith((".", "/", "~")) or text.endswith("/") or text.lower().endswith(_LOCAL_SUFFIXES):
    return False
  if not _REPO_ID.fullmatch(text):
    return False
  return not ("/" in text and Path(text.split("/")[0]).is_dir())
