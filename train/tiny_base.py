"""The "tiny-llama" and "tiny-xlmr" bases of `configs/tiny.yaml`; they live with the other tiny fixtures in
`zett.testing.tiny` and keep this import path."""

from zett.testing.tiny import CORPUS_FILES, SPECIAL_TOKENS, corpus_text, tiny_base, tiny_tokenizer, tiny_xlmr_base

__all__ = ["CORPUS_FILES", "SPECIAL_TOKENS", "corpus_text", "tiny_base", "tiny_tokenizer", "tiny_xlmr_base"]
