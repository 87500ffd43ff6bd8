"""Data: text sources (and the no-download default corpus), tokenizers, token cache, packing, MQAR, passkey
sequences."""

from gsa.lazy import lazy_exports

__all__ = [
    "BUILTIN_CORPUS", "DEFAULT_CACHE_DIR", "MQAR_ALPHA", "MQAR_VOCAB", "DataOrder", "TextData", "TokenizedCorpus",
    "Windows",
    "build_token_cache", "byte_tokenizer", "expand_sources", "iter_documents", "load_text_data",
    "load_token_cache", "load_tokenizer", "mqar_accuracy", "mqar_batch", "pack_batch", "passkey_batch",
    "prepare_text_data",
    "python_docs_corpus", "read_mqar_settings", "token_byte_lengths", "write_mqar_settings",
]

lazy_exports(__name__, {
    **dict.fromkeys(["TokenizedCorpus", "build_token_cache", "load_token_cache"], ".cache"),
    **dict.fromkeys(["MQAR_ALPHA", "MQAR_VOCAB", "mqar_accuracy", "mqar_batch", "read_mqar_settings",
                     "write_mqar_settings"], ".mqar"),
    **dict.fromkeys(["DataOrder", "Windows", "pack_batch"], ".packing"),
    "passkey_batch": ".passkey",
    **dict.fromkeys(["BUILTIN_CORPUS", "expand_sources", "iter_documents", "python_docs_corpus"], ".sources"),
    **dict.fromkeys(["DEFAULT_CACHE_DIR", "TextData", "load_text_data", "prepare_text_data"], ".text"),
    **dict.fromkeys(["byte_tokenizer", "load_tokenizer", "token_byte_lengths"], ".tokenizer"),
})
