"""benchmarks/recipes: every recipe parses, one runs end to end at a toy size on the CPU, and the two table helpers
(mqar_summary.py, compare_runs.py) turn metrics.jsonl files into the tables and JSON the results page shows, and
fla_vs_converted.py's profile summary."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts_under_test import load_script

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "benchmarks" / "recipes"


def _load(name: str):
    return load_script(f"benchmarks/recipes/{name}.py")


def _write_metrics(path: Path, rows: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.sh")))
def test_recipe_parses_and_says_how_to_run_it(recipe):
    text = (RECIPES / recipe).read_text()
    assert subprocess.run(["bash", "-n", str(RECIPES / recipe)], capture_output=True).returncode == 0
    if recipe != "common.sh":  # sourced, not run
        assert f"bash benchmarks/recipes/{recipe}" in text, "the header gives the command that runs it"
        assert "common.sh" in text


@pytest.mark.slow
def test_train_recipe_runs_a_toy_size_on_cpu(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    r = subprocess.run(["bash", str(RECIPES / "train.sh"), "--size", "tiny", "--variants", "gsa", "--seq-lens", "32",
                        "--tokens", "64", "--steps", "1", "--warmup", "0", "--device", "cpu"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((tmp_path / "train.json").read_text())["rows"]
    assert [(row["variant"], row["T"]) for row in rows] == [("gsa", 32)]  # the arguments override the defaults
    assert (tmp_path / "train.png").exists()


def test_mqar_summary_groups_seeds(tmp_path):
    mod = _load("mqar_summary")
    runs = []
    for seed, acc in ((0, 0.9), (1, 0.7)):
        runs.append(str(_write_metrics(tmp_path / f"d64-gsa-seed{seed}", [
            {"step": 10, "loss": 3.0, "lr": 1e-3},
            {"step": 10, "mqar_acc": {"4": 0.5, "64": acc / 2}},
            {"step": 20, "mqar_acc": {"4": 1.0, "64": acc}},
        ])))
    other = _write_metrics(tmp_path / "elsewhere", [{"step": 20, "mqar_acc": {"4": 0.25, "64": 0.125}}])
    out = tmp_path / "mqar.json"
    assert mod.main(["--out", str(out), "--machine", "test", *runs, f"d64-abc-seed0={other}/metrics.jsonl"]) == 0
    data = json.loads(out.read_text())
    assert data["machine"] == {"recorded": "test"}
    assert [r["name"] for r in data["runs"]] == ["d64-gsa-seed0", "d64-gsa-seed1", "d64-abc-seed0"]
    gsa = data["jobs"]["d64-gsa"]
    assert gsa["seeds"] == 2 and gsa["mean"]["64"] == pytest.approx(0.8)
    assert (gsa["min"]["64"], gsa["max"]["64"]) == (0.7, 0.9)
    assert data["jobs"]["d64-abc"]["mean"] == {"4": 0.25, "64": 0.125}
    assert data["runs"][0]["curve"] == [[10, {"4": 0.5, "64": 0.45}], [20, {"4": 1.0, "64": 0.9}]]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mqar_summary_refuses_a_run_without_evaluations(tmp_path):
    mod = _load("mqar_summary")
    run = _write_metrics(tmp_path / "r", [{"step": 1, "loss": 1.0, "lr": 1e-3}])
    with pytest.raises(SystemExit, match="no MQAR evaluation"):
        mod.main(["--out", str(tmp_path / "x.json"), str(run)])


def test_compare_runs_measures_each_run_against_the_first(tmp_path, capsys):
    mod = _load("compare_runs")
    ref = _write_metrics(tmp_path / "one", [
        {"step": s, "loss": 5.0 - s, "lr": 1e-3, "tokens_per_s": 100.0} for s in (1, 2, 3)
    ] + [{"step": 3, "eval_loss": 2.0, "eval_ppl": 7.39}])
    other = _write_metrics(tmp_path / "ddp", [
        {"step": s, "loss": 5.0 - s + 0.25 * (s == 2), "lr": 1e-3, "tokens_per_s": 200.0} for s in (1, 2)
    ])
    out = tmp_path / "cmp.json"
    assert mod.main(["--out", str(out), "--machine", "test", f"one={ref}", str(other)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows] == ["one", str(other)]
    assert rows[0]["max_abs_diff"] == 0.0 and rows[1]["max_abs_diff"] == 0.25
    assert (rows[0]["steps"], rows[0]["eval_ppl"], rows[1]["eval_loss"]) == (3, 7.39, None)
    assert rows[1]["tokens_per_s"] == 200.0
    assert "| one |" in capsys.readouterr().out


def _toy_t2r_env(tmp_path, **extra):
    """The environment of a T2R recipe run on a tiny teacher and corpus (CPU, seconds a stage)."""
    sys.path.insert(0, str(REPO / "tests"))
    from convert.convert_teachers import tiny_teacher
    from gsa.data import byte_tokenizer, prepare_text_data

    teacher = tmp_path / "teacher"
    tiny_teacher("llama", vocab_size=300).save_pretrained(teacher)
    byte_tokenizer().save_pretrained(teacher)
    src = tmp_path / "corpus.jsonl"
    words = "some words to learn from while the report builds its tasks out of them".split()
    def doc(i):  # distinct sentences: the report's tasks need distractors
        return " ".join(f"Line {j} of {i} has {words[(i + j) % len(words)]} and {words[(3 * i + j) % len(words)]}."
                        for j in range(40))

    src.write_text("".join(json.dumps({"text": doc(i)}) + "\n" for i in range(80)))
    tokens = prepare_text_data([str(src)], str(teacher), cache_dir=tmp_path / "cache", heldout_fraction=0.2,
                               progress=False).cache_path
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable, TEACHER=str(teacher), TOKENS=tokens,
               RUNS=str(tmp_path / "runs"), TOKENS_BUDGET="5000",
               EXTRA="data.seq_len=64 train.micro_batch_size=2 distill.gate_init_sequences=2 train.eval_sequences=2",
               REPORT_EXTRA="--seq-len 64 --eval-sequences 2 --passkey-lengths 300 --passkey-examples 1 "
                            "--decode-tokens 2 --task-examples 4 --task-context-words 8")
    return {**env, **extra}


@pytest.mark.slow
def test_t2r_pure_recipe_runs_every_stage_at_a_toy_size(tmp_path):
    """The LoRA rung (stages 0, 1 and 2 with adapters, then the report) on a tiny teacher and corpus, with its own
    stage shares: each stage's max_steps comes from its share of the budget, and the run's name and report carry
    the recipe's facts."""
    pytest.importorskip("peft", reason="peft is not installed: the lora rung needs it (pip install -e '.[lora]')")
    env = _toy_t2r_env(tmp_path, ABLATION="lora", STAGE_SHARES="10 20 70")
    r = subprocess.run(["bash", str(RECIPES / "t2r-pure.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "t2r-pure-lora-5000-s10-20-70-seed0.json").read_text())
    # stage 0: 10% of 5000 / (2 x 64) -> 3 steps; stage 1: 20% -> 7; stage 2: 70% -> 27
    recipe = report["recipe"]
    assert {k: recipe[k] for k in ("ablation", "tokens_budget", "stage_shares", "stage_steps")} == {
        "ablation": "lora", "tokens_budget": 5000, "stage_shares": [10, 20, 70], "stage_steps": [3, 7, 27]}
    # each stage's resolved config and loss curve, and the final student's weight hashes
    assert [recipe["stage_configs"][f"stage{n}"]["train"]["max_steps"] for n in range(3)] == [3, 7, 27]
    assert recipe["stage_configs"]["stage2"]["lora"]["rank"] == 8
    assert set(recipe["stage_metrics"]) == {"stage0", "stage1", "stage2"}
    assert all(row["loss"] > 0 for rows in recipe["stage_metrics"].values() for row in rows if "loss" in row)
    from gsa.models.loading import file_sha256

    model = Path(report["student"]["checkpoint"])
    hashes = report["student"]["weights_sha256"]
    assert hashes and all(file_sha256(model / name) == sha for name, sha in hashes.items())
    assert [row["model"] for row in report["rows"]][-1] == "lora"
    assert set(report["tasks"]) == {"cloze", "next-sentence"}, report["tasks"]


@pytest.mark.slow
def test_t2r_ladder_runs_rungs_side_by_side_past_the_starting_command(tmp_path):
    """t2r-ladder.sh start launches each rung in its own process session and returns at once; wait follows them
    (exit 3 while one runs, 0 once all have finished) and copies each rung's report and log to OUT. A rung that
    fails (here: a budget the recipe refuses) makes wait exit 1. The second rung keeps the attention sinks, whose
    stages take overrides of their own: the conversion's window and sinks, stage 1's trained parameters. The first
    is written base@3e-4: stage 2 at that peak learning rate, under the name base-lr3e-4. S2_BATCH reaches every
    rung: stage 2 at micro-batches of 4 (the others' 2), half the steps, the reports named with -b4."""
    env = _toy_t2r_env(tmp_path, RUNGS="base@3e-4 sinks-qkvo", TOKENS_BUDGET="2000", POLL="1", S2_BATCH="4")

    def ladder(*args, **more):
        return subprocess.run(["bash", str(RECIPES / "t2r-ladder.sh"), *args], env=dict(env, **more),
                              capture_output=True, text=True, timeout=600)

    r = ladder("start")
    assert r.returncode == 0 and r.stdout.count("started ") == 2, r.stderr
    r = ladder("wait", "0")
    assert r.returncode == 3 and "running 2" in r.stdout, r.stdout + r.stderr
    r = ladder("wait", "500")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = tmp_path / "out"
    lrs = {}
    for rung, name in (("base", "base-lr3e-4"), ("sinks-qkvo", "sinks-qkvo")):
        report = json.loads((out / f"t2r-pure-{rung}-2000{name[len(rung):]}-b4-seed0.json").read_text())
        assert report["recipe"]["ablation"] == rung and (out / f"{name}.log").exists()
        # stage 2: 80% of 2000 tokens / (4 x 64) -> 6 steps; stage 1 keeps micro-batches of 2
        assert report["recipe"]["stage_steps"][-1] == 6, report["recipe"]["stage_steps"]
        batches = {stage: c["train"]["micro_batch_size"] for stage, c in report["recipe"]["stage_configs"].items()}
        assert batches["stage1"] == 2 and batches["stage2"] == 4, batches
        lrs[rung] = {stage: c["optim"]["lr"] for stage, c in report["recipe"]["stage_configs"].items()}
    # S2_LR changes stage 2's alone; the other rung keeps its configs' rates
    assert lrs == {"base": {"stage1": 1e-3, "stage2": 3e-4}, "sinks-qkvo": {"stage0": 3e-3, "stage1": 1e-3,
                                                                            "stage2": 1e-3}}, lrs
    configs = report["recipe"]["stage_configs"]
    # stage 2 runs compiled (configs/t2r-pure-stage2.toml), the stages before it eager
    assert [configs[f"stage{n}"]["train"]["compile"] for n in range(3)] == [False, False, True]
    assert (configs["stage0"]["model"]["window_size"], configs["stage0"]["model"]["num_sink_tokens"]) == (1, 4)
    assert configs["stage1"]["distill"]["train_params"] == [
        "f_proj", "q_map", "k_map", "memory_scale", "q_proj", "k_proj", "v_proj", "o_proj"]
    student = json.loads((Path(report["student"]["checkpoint"]) / "config.json").read_text())
    assert (student["window_size"], student["num_sink_tokens"]) == (1, 4)
    r = ladder("start", RUNGS="base", TOKENS_BUDGET="0")
    assert r.returncode == 0, r.stderr
    r = ladder("wait", "60")
    assert r.returncode == 1 and "TOKENS_BUDGET must be" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(["bash", str(RECIPES / "t2r-ladder.sh"), "wait"], capture_output=True, text=True,
                       env=dict(env, RUNS=str(tmp_path / "none")))
    assert r.returncode == 2 and "'start' first" in r.stderr


def _t2r_pure_without_data(tmp_path, **env_extra):
    """t2r-pure.sh with no teacher or token cache there (TOKENS_BUDGET 5M unless given): for the refusals that must
    come before any data is looked at."""
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable, RUNS=str(tmp_path / "runs"),
               TEACHER=str(tmp_path / "none"), TOKENS=str(tmp_path / "none"), **{"TOKENS_BUDGET": "5M", **env_extra})
    return subprocess.run(["bash", str(RECIPES / "t2r-pure.sh")], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("budget", ["-5M", "0", "0M", "1.5M", "M", "015M", "15k"])
def test_t2r_pure_recipe_refuses_a_bad_budget_before_any_stage(tmp_path, budget):
    """A budget that is not a positive number of tokens (or of millions) is refused with the recipe's message and
    exit code 2, before any stage runs (bash arithmetic would make -5M and 0 one step a stage and a report, and
    015M octal: 13M)."""
    r = _t2r_pure_without_data(tmp_path, TOKENS_BUDGET=budget)
    assert (r.returncode, r.stdout) == (2, ""), r.stdout[-2000:] + r.stderr[-2000:]
    assert f"TOKENS_BUDGET must be like 5M, 15M, 50M or a number of tokens, got '{budget}'" in r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("batch", ["0", "-4", "4.5", "b", "016"])
def test_t2r_pure_recipe_refuses_a_bad_stage2_batch_before_any_stage(tmp_path, batch):
    """S2_BATCH (stage 2's micro-batch size) must be a positive whole number; anything else is refused with exit code
    2 before the data is looked at."""
    r = _t2r_pure_without_data(tmp_path, S2_BATCH=batch)
    assert (r.returncode, r.stdout) == (2, ""), r.stdout[-2000:] + r.stderr[-2000:]
    assert f"S2_BATCH must be a positive whole number of sequences such as 64, got '{batch}'" in r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("lr", ["0", "-3e-4", "3e-4x", "lr", "01e-3"])
def test_t2r_pure_recipe_refuses_a_bad_stage2_learning_rate_before_any_stage(tmp_path, lr):
    """S2_LR (stage 2's peak learning rate) must be a positive number; anything else is refused with exit code 2
    before the data is looked at."""
    r = _t2r_pure_without_data(tmp_path, S2_LR=lr)
    assert (r.returncode, r.stdout) == (2, ""), r.stdout[-2000:] + r.stderr[-2000:]
    assert f"S2_LR must be a positive number such as 3e-4 or 0.0003, got '{lr}'" in r.stderr
    assert not (tmp_path / "runs").exists()


def _helper(tmp_path, call):
    """Run a common.sh helper in tmp_path (common.sh changes to the repository root; the helper then reads the
    working directory it is called from)."""
    script = f'source "{RECIPES / "common.sh"}"; cd "{tmp_path}"; {call}'
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable)
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)


def test_token_cache_finds_the_one_cache_or_says_why_not(tmp_path):
    """token_cache (the T2R recipes' TOKENS default): the one .cache/t2r/tokens/tokens-* directory; none or two are
    refused with the count and the command that builds one, a directory without meta.json by name (a stale default
    once cost a GPU call three failed stages)."""
    r = _helper(tmp_path, "token_cache")
    assert r.returncode == 2 and "found 0 under .cache/t2r/tokens" in r.stderr, r.stderr
    assert "prepare_t2r_data.py corpus" in r.stderr
    one = tmp_path / ".cache/t2r/tokens/tokens-abc"
    one.mkdir(parents=True)
    r = _helper(tmp_path, "token_cache")
    assert r.returncode == 2 and "TOKENS=.cache/t2r/tokens/tokens-abc is not a token cache directory" in r.stderr
    (one / "meta.json").write_text("{}")
    r = _helper(tmp_path, "token_cache")
    assert (r.returncode, r.stdout) == (0, ".cache/t2r/tokens/tokens-abc\n"), r.stderr
    r = _helper(tmp_path, f'token_cache "{one}"')
    assert (r.returncode, r.stdout) == (0, f"{one}\n"), r.stderr
    (tmp_path / ".cache/t2r/tokens/tokens-def").mkdir()
    r = _helper(tmp_path, "token_cache")
    assert r.returncode == 2 and "found 2 under .cache/t2r/tokens" in r.stderr, r.stderr
    r = _helper(tmp_path, "teacher_dir")
    assert r.returncode == 2 and "TEACHER=.cache/t2r/teacher is not a checkpoint directory" in r.stderr, r.stderr


def test_t2r_recipes_refuse_missing_data_before_any_stage(tmp_path):
    """t2r.sh and t2r-pure.sh stop with exit code 2 and the reason when TEACHER or TOKENS is not there, before any
    stage starts."""
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text("{}")
    for recipe in ("t2r.sh", "t2r-pure.sh"):
        for env_extra, message in (({"TEACHER": str(tmp_path / "none")}, "is not a checkpoint directory"),
                                   ({"TEACHER": str(teacher), "TOKENS": str(tmp_path)}, "is not a token cache")):
            env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable, RUNS=str(tmp_path / "runs"),
                       TOKENS_BUDGET="5M", **env_extra)
            r = subprocess.run(["bash", str(RECIPES / recipe)], env=env, capture_output=True, text=True,
                               timeout=60)
            assert r.returncode == 2 and message in r.stderr, (recipe, r.stdout[-500:], r.stderr[-500:])
            assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("ablation, shares", [("span", "10 10 70"), ("span", "0 50 50"), ("base", "10 40 50"),
                                                ("span", "10 0 90"), ("span", "ten 40 50"), ("span", "10 90"),
                                                ("span", "08 10 82")])
def test_t2r_pure_recipe_refuses_bad_stage_shares_before_any_stage(tmp_path, ablation, shares):
    """STAGE_SHARES: three percentages summing to 100, stages 1 and 2 above 0, stage 0 above 0 exactly when the rung
    has one; refused with exit code 2 before the data is even looked at."""
    r = _t2r_pure_without_data(tmp_path, ABLATION=ablation, STAGE_SHARES=shares)
    assert r.returncode == 2 and "STAGE_SHARES must be three percentages" in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists()


def test_training_profile_splits_the_op_kernels_from_the_rest():
    """benchmarks/recipes/fla_vs_converted.py's summary: ours (chunk_gsa_*) and fla-core's (chunk_*, its slot
    softmax) op kernels against everything else in a step's profile."""
    mod = _load("fla_vs_converted")
    kernels = [dict(us=1500.0, calls=2, kernel="chunk_gsa_bwd_kernel_ds"), dict(us=500.0, calls=1,
               kernel="chunk_fwd_kernel_h"), dict(us=250.0, calls=1, kernel="softmax_bwd_kernel"),
               dict(us=4000.0, calls=3, kernel="nvjet_sm90_tst_256x128"), dict(us=750.0, calls=1,
               kernel="rms_norm_bwd_kernel")]
    assert mod.profile_summary(kernels) == {"device_ms": 7.0, "op_kernels_ms": 2.25, "other_kernels_ms": 4.75}


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="ab.sh pack reads a commit with git archive")
def test_ab_pack_extracts_the_base_commits_package(tmp_path):
    env = dict(os.environ, AB_BASE_DIR=str(tmp_path / "base"))
    r = subprocess.run(["bash", str(RECIPES / "ab.sh"), "pack", "HEAD"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert (tmp_path / "base" / "COMMIT").read_text().strip() == head
    assert (tmp_path / "base" / "gsa" / "ops" / "triton" / "chunk.py").exists()
    bad = subprocess.run(["bash", str(RECIPES / "ab.sh"), "run"], env=dict(env, AB_BASE_DIR=str(tmp_path / "none")),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "ab.sh pack BASE" in bad.stderr


def test_background_runs_a_job_past_the_shell_and_waits_for_it(tmp_path):
    """start returns at once; wait reports 3 while the job runs and 0 once it has ended, with its own status kept;
    a second start of a running job and a bad name are refused."""
    env = dict(os.environ, BG=str(tmp_path), OUT=str(tmp_path / "out"), PYTHON=sys.executable, POLL="0.2")
    sh = str(RECIPES / "background.sh")

    def run(*args):
        return subprocess.run(["bash", sh, *args], env=env, capture_output=True, text=True, timeout=120)

    start = run("start", "job", "--", "bash", "-c", "sleep 2; echo done here; exit 5")
    assert start.returncode == 0, start.stderr
    assert run("start", "job", "--", "true").returncode == 1  # already running
    still = run("wait", "job", "0")
    assert still.returncode == 3 and "still running" in still.stdout
    ended = run("wait", "job", "60")
    assert ended.returncode == 0 and "done here" in ended.stdout and "ended with status 5" in ended.stdout
    assert (tmp_path / "job" / "rc").read_text().strip() == "5"
    assert run("status", "job").returncode == 0
    assert run("start", "../x", "--", "true").returncode == 2
    assert run("wait", "nothing", "1").returncode == 2
