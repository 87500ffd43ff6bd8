"""`gsa demo` (the README's main job) end to end on the tiny config: trains, evaluates, samples, says where."""

from gsa.cli import main
from train.helpers import TINY, tiny_overrides


def test_demo_end_to_end(data_cache, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--config", str(TINY), "--max-steps", "4", "--max-new-tokens", "5",
                 *tiny_overrides(data_cache, out)]) == 0
    text = capsys.readouterr().out
    assert "held-out perplexity:" in text
    assert "sample: The list type" in text  # the sample is printed as text, prompt first, not as a repr
    assert f"checkpoint: {out / 'model'}" in text
    assert (out / "model" / "config.json").exists()
