"""Evaluation: perplexity and bits per byte, MQAR recall accuracy."""

from gsa.lazy import lazy_exports

__all__ = ["main", "mqar_eval", "perplexity", "token_stream"]

lazy_exports(__name__, {
    "main": ".cli", "mqar_eval": ".mqar", "perplexity": ".perplexity", "token_stream": ".perplexity",
})
