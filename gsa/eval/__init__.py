"""Evaluation: perplexity and bits per byte, MQAR recall accuracy, offline multiple-choice tasks."""

from gsa.lazy import lazy_exports

__all__ = ["build_task", "main", "mqar_eval", "multiple_choice_scores", "perplexity", "token_stream",
           "write_task"]

lazy_exports(__name__, {
    "build_task": ".tasks", "main": ".cli", "mqar_eval": ".mqar", "multiple_choice_scores": ".choice",
    "perplexity": ".perplexity", "token_stream": ".perplexity", "write_task": ".tasks",
})
