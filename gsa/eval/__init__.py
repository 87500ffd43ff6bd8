"""Evaluation: perplexity and bits per byte, MQAR recall accuracy."""

from .cli import main
from .mqar import mqar_eval
from .perplexity import perplexity, token_stream

__all__ = ["main", "mqar_eval", "perplexity", "token_stream"]
