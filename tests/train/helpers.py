import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny-cpu.toml"


def shared_data_cache(tmp_path_factory):
    """One tokenized copy of the bundled corpus per test session (BPE training + tokenization once), shared
    by tests/train and tests/eval."""
    from gsa.data import prepare_text_data
    from gsa.train import load_config

    cache = tmp_path_factory.getbasetemp() / "gsa-data"
    d = load_config(TINY).data
    prepare_text_data(d.sources, d.tokenizer, d.vocab_size, str(cache), d.heldout_fraction, progress=False)
    return cache


def tiny_overrides(cache, out, **extra):
    """Overrides for a quick tiny-cpu run: quiet, logging every step, no mid-run evaluation."""
    base = {
        "data.cache_dir": str(cache), "output_dir": str(out), "train.progress": False, "train.log_every": 1,
        "train.eval_every": 0, "train.eval_sequences": 16,
    }
    base.update(extra)
    return [f"{k}={_toml(v)}" for k, v in base.items()]


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v + '"'
    return str(v)


def subprocess_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", str(__import__("torch").get_num_threads()))
    return env


PYTHON = sys.executable
