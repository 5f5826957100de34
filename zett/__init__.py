"""zett: free pretrained language models from their tokenizers.

A small hypernetwork reads any tokenizer's tokens, spelled in the base model's own subtokens,
and predicts their embeddings for the frozen base model.
"""

__version__ = "0.1.0"
