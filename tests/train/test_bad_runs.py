"""Runs that must not silently go wrong: resuming with another model, training into a directory holding an earlier
run, and the files a kill could leave half-written (metrics.jsonl, checkpoints)."""

import os

import pytest

from gsa.cli import main
from gsa.errors import InputError
from gsa.train import load_config, train
from gsa.train import checkpoint as ckpt
from gsa.train.checkpoint import CheckpointError, list_checkpoints
from gsa.train.metrics import read_metrics

from .helpers import TINY, tiny_overrides


@pytest.fixture(scope="module")
def two_steps(data_cache, tmp_path_factory):
    """A finished 2-step run, checkpointed at step 2."""
    out = tmp_path_factory.mktemp("two")
    train(load_config(TINY, tiny_overrides(data_cache, out, **{"train.max_steps": 2})))
    return out


@pytest.mark.parametrize("change, message", [
    ("model.num_slots=32", r"trained with another model \(num_slots 16 then, 32 now\)"),
    ("model.num_hidden_layers=3", r"num_hidden_layers 2 then, 3 now"),
])
@pytest.mark.slow
def test_resume_with_another_model_is_refused(two_steps, data_cache, change, message, capsys):
    over = tiny_overrides(data_cache, two_steps, **{"train.max_steps": 4}) + [change]
    with pytest.raises(CheckpointError, match=message + r".*resume with the \[model\] settings it was trained with"):
        train(load_config(TINY, over), resume=True)
    capsys.readouterr()
    assert main(["train", "--config", str(TINY), "--resume", *over]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gsa train: error: ") and "Traceback" not in "\n".join(err)
    assert [p.name for p in list_checkpoints(two_steps)] == ["step_00000002"]  # untouched


def test_an_earlier_run_needs_resume_or_overwrite(two_steps, data_cache, tmp_path, capsys):
    """Rerunning with --max-steps into the same directory would train anew and then prune its own newest checkpoint
    as the oldest; it is refused, and --overwrite / --resume say which run is meant."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    over = tiny_overrides(data_cache, out, **{"train.max_steps": 1})
    with pytest.raises(InputError, match=r"holds an earlier run \(checkpoints up to step_00000002\): pass --resume"):
        train(load_config(TINY, over))
    assert main(["train", "--config", str(TINY), *over]) == 2
    assert capsys.readouterr().err.strip().endswith("pass --resume to continue it, --overwrite to replace it, or "
                                                    "another --output-dir")
    summary = train(load_config(TINY, over), overwrite=True)
    assert summary["step"] == 1 and [p.name for p in list_checkpoints(out)] == ["step_00000001"]
    assert [r["step"] for r in read_metrics(out) if "loss" in r] == [1]
    summary = train(load_config(TINY, tiny_overrides(data_cache, out, **{"train.max_steps": 3})), resume=True)
    assert summary["step"] == 3 and [r["step"] for r in read_metrics(out) if "loss" in r] == [1, 2, 3]
    with pytest.raises(InputError, match="choose one"):
        train(load_config(TINY, over), resume=True, overwrite=True)


def test_metrics_are_replaced_atomically_on_resume(two_steps, data_cache, tmp_path):
    """Resuming rewrites metrics.jsonl (dropping rows past the checkpoint) as a new file renamed into place."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    metrics = out / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 3, "loss": 1.0}\n{"step": 4, "lo')  # rows of a run killed after its last checkpoint
    inode = metrics.stat().st_ino
    train(load_config(TINY, tiny_overrides(data_cache, out, **{"train.max_steps": 3})), resume=True)
    assert metrics.stat().st_ino != inode and not list(out.glob(".metrics.jsonl*"))
    assert [r["step"] for r in read_metrics(out) if "loss" in r] == [1, 2, 3]


def test_checkpoint_files_reach_the_disk_before_the_manifest_and_the_rename(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(ckpt, "_fsync", lambda p: synced.append((p, (p / "manifest.json").exists()
                                                                  if p.is_dir() else p.name == "manifest.json")))
    tmp = ckpt.tmp_dir(tmp_path, 5)
    (tmp / "model").mkdir(parents=True)
    for name in ("model/model.safetensors", "model/config.json", "trainer.pt", "rng_rank0.pt"):
        (tmp / name).write_bytes(os.urandom(64))
    ckpt.write_manifest(tmp, 5, 1)
    before = {p for p, after_manifest in synced if not after_manifest}
    assert before == {tmp, tmp / "model", *(p for p in tmp.rglob("*") if p.name != "manifest.json")}
    assert synced[-1] == (tmp, True)  # the folder again, holding the manifest
    synced.clear()
    final = ckpt.publish(tmp, 5, keep=2)
    assert synced == [(final.parent, False)] and ckpt.verify(final, 1) == 5
