"""Fixtures for tests and examples: tiny random base models (no downloads)."""

from zett.testing.tiny import tiny_llama, tiny_llama_config

__all__ = ["tiny_llama", "tiny_llama_config"]
