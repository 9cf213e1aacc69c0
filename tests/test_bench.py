"""The benchmark suite: its phase accounting by hand, and a smoke run of every mode."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ppo_exp.bench.clock import PHASES, PhaseClock, patched, to_phases
from ppo_exp.bench.suite import UNTRACKED, Spec, run_once, summarise, trl_python

QUICK = Spec(batch_size=4, max_new_tokens=6, ppo_epochs=1, num_minibatches=2, iterations=2,
             eval_prompts=4, mlflow=False)


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "ppo_exp.bench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_to_phases_moves_nested_time_out_of_its_parent_and_keeps_the_total():
    timed = {"rollout": 1.0, "rollout/generate": 0.6, "rollout/generate/policy": 0.5,
             "update": 2.0, "update/backward": 0.7, "eval": 5.0}
    mapping = {"rollout": "rollout_other", "rollout/generate": "generate",
               "update": "update_loss", "update/backward": "update_backward"}
    phases = to_phases(timed, 3.5, mapping)
    assert set(phases) == set(PHASES)
    assert phases["generate"] == pytest.approx(0.6)  # its unmapped child is not subtracted
    assert phases["rollout_other"] == pytest.approx(0.4)
    assert phases["update_loss"] == pytest.approx(1.3)
    assert phases["update_backward"] == pytest.approx(0.7)
    assert phases["other"] == pytest.approx(0.5)  # eval is not mapped: left out entirely
    assert sum(phases.values()) == pytest.approx(3.5)


def test_phase_clock_names_calls_by_where_they_ran_and_patched_restores():
    class Box:
        def work(self):
            return 7

    clock, box = PhaseClock(), Box()
    inner = clock.wrap("inner", lambda: 1)
    with patched(box, "work", clock.wrap("outer", lambda: inner() + 1)):
        assert box.work() == 2
        inner()
    assert box.work() == 7 and "work" not in vars(box)
    assert set(clock.take()) == {"outer", "outer/inner", "inner"}
    assert clock.take() == {}


def test_phase_clock_can_count_cpu_time_only():
    import time

    clock = PhaseClock("cpu")
    clock.wrap("sleep", time.sleep)(0.3)  # a sleeping process uses no CPU
    assert clock.take()["sleep"] < 0.1
    with pytest.raises(ValueError, match="accepted: 'wall' | 'cpu' | 'cuda'"):
        PhaseClock("gpu")


@pytest.mark.slow
def test_a_run_reports_its_own_peak_rss_not_its_parents():
    """getrusage's ru_maxrss survives exec: a run started by a 400 MB parent would say 400."""
    parent = bytearray(400 * 2**20)
    parent[:: 4096] = b"\1" * len(parent[:: 4096])  # touch every page: it is resident
    code = "from ppo_exp.bench.clock import peak_rss_mb; print(peak_rss_mb())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    assert float(child.stdout) < 200
    del parent


def test_phases_mode_accounts_for_the_whole_iteration(tmp_path):
    done = bench("phases", "--quick", "--rounds", "1", "--json", str(tmp_path / "b.json"),
                 cwd=tmp_path)
    assert "| update_backward |" in done.stdout and "load average" in done.stdout
    ours = json.loads((tmp_path / "b.json").read_text())["summaries"]["ppo_exp"]
    assert sum(ours["phases"].values()) == pytest.approx(ours["wall_s"], rel=1e-6)
    for phase in ("generate", "score_policy", "score_critic", "score_reference",
                  "score_reward", "update_forward", "update_backward", "update_step"):
        assert ours["phases"][phase] > 0, phase
    assert ours["peak_rss_mb"] > 100 and ours["tokens_per_s"] > 0


@pytest.mark.slow
def test_a_config_variant_runs_beside_ppo_exp_with_its_own_keys(tmp_path):
    done = bench("phases", "--quick", "--rounds", "1", "--variant", "short:max_new_tokens=2",
                 "--json", str(tmp_path / "b.json"), cwd=tmp_path)
    assert "| ppo_exp / short |" in done.stdout
    summaries = json.loads((tmp_path / "b.json").read_text())["summaries"]
    assert set(summaries) == {"ppo_exp", "short"}
    assert summaries["short"]["response_tokens"] <= 8 * 2  # --quick: 8 rows
    assert summaries["ppo_exp"]["response_tokens"] > 8 * 2
    assert summaries["short"]["first_iteration_s"] > 0


def test_a_variant_is_a_name_and_config_keys():
    from ppo_exp.bench.__main__ import variant

    assert variant("compiled:compile=true,threads=2") == (
        "compiled", {"compile": True, "threads": 2}
    )
    with pytest.raises(argparse.ArgumentTypeError, match="NAME:KEY=VALUE"):
        variant("compiled")


@pytest.mark.slow
def test_trl_mode_without_trl_says_how_to_set_it_up_and_compares_with_the_floor(tmp_path):
    done = bench("trl", "--quick", "--rounds", "1", "--trl-python", str(tmp_path / "none"),
                 "--json", str(tmp_path / "b.json"), cwd=tmp_path)
    assert "pip install trl==1.12.0" in done.stdout and "Skipping TRL" in done.stdout
    assert "| ppo_exp / floor |" in done.stdout
    summaries = json.loads((tmp_path / "b.json").read_text())["summaries"]
    assert set(summaries) == {"ppo_exp", "floor"}
    assert summaries["floor"]["phases"]["update_step"] > 0


@pytest.mark.slow
def test_scaling_mode_gives_one_row_per_point(tmp_path):
    from ppo_exp.bench.scaling import scaling, scaling_table

    rows = scaling(QUICK, root=tmp_path, points=[("batch", "4", {"batch_size": 4})])
    (row,) = rows
    assert row["ratio"] == pytest.approx(row["ppo_exp_s"] / row["floor_s"])
    assert row["params"] > 900_000
    assert scaling_table(rows).count("\n") == 2


def test_the_worst_phase_is_taken_over_every_phase_the_floor_times():
    from ppo_exp.bench.scaling import worst_phase

    floor = dict.fromkeys(PHASES, 0.0) | {"generate": 1.0, "update_loss": 0.01,
                                          "score_reward": 0.2, "other": 0.001}
    ours = dict.fromkeys(PHASES, 0.0) | {"generate": 1.05, "update_loss": 0.03,
                                         "score_reward": 0.1, "other": 0.5,
                                         "update_clip": 0.2, "logging": 0.1}
    # update_loss at 3x counts; clipping and logging (no floor counterpart) and the
    # floor's loop overhead ("other") do not
    assert worst_phase({"phases": ours}, {"phases": floor}) == ("update_loss", pytest.approx(3.0))


def test_the_scaling_table_is_written_between_its_markers(tmp_path, capsys):
    from ppo_exp.bench.scaling import BEGIN, END, check_markdown, write_markdown

    new = tmp_path / "scaling.md"  # a new file holds only the block
    write_markdown(new, "| a |", "how")
    assert new.read_text() == f"{BEGIN}\nhow\n\n| a |\n{END}\n"
    readme = tmp_path / "README.md"  # the README keeps everything around the markers
    readme.write_text(f"intro\n{BEGIN}\nold\n{END}\nrest\n")
    write_markdown(readme, "| b |", "again")
    assert readme.read_text() == f"intro\n{BEGIN}\nagain\n\n| b |\n{END}\nrest\n"
    (tmp_path / "other.md").write_text("no markers\n")
    with pytest.raises(SystemExit) as refused:  # refused before anything runs
        check_markdown(tmp_path / "other.md")
    assert refused.value.code == 2
    assert "invalid --markdown" in capsys.readouterr().err
    assert (tmp_path / "other.md").read_text() == "no markers\n"


@pytest.mark.slow
def test_run_mode_times_the_real_command(tmp_path):
    done = bench("run", "--warm-only", "train=smoke", "iterations=2", cwd=tmp_path)
    assert "warm run:" in done.stdout and "eval_reward_final" in done.stdout


@pytest.mark.slow
@pytest.mark.skipif(trl_python() is None, reason="TRL's venv not set up (PPO_EXP_TRL_PYTHON)")
@pytest.mark.parametrize("system", ["trl", "trl_mlflow"])
def test_trl_driver_runs_trl_offline_on_the_local_models(tmp_path, system):
    result = run_once(system, QUICK, tmp_path, trl=trl_python())
    summary = summarise([result])
    assert summary["system"] == system and summary["trl_version"] == "1.12.0"
    assert summary["phases"]["gc"] > 0 and summary["phases"]["update_step"] > 0
    assert summary["wall_without_gc_s"] < summary["wall_s"]
    assert result["mlflow_loaded"] == (system == "trl_mlflow")  # only when it reports there


@pytest.mark.slow
def test_the_untracked_system_is_ppo_exp_without_mlflow(tmp_path):
    # what TRL's default run does not pay for: its peak RSS beside ppo_exp's (README)
    tracked = dataclasses.replace(QUICK, mlflow=True)
    ours = run_once("ppo_exp", tracked, tmp_path)
    untracked = run_once(UNTRACKED, tracked, tmp_path)
    assert ours["mlflow_loaded"] and not untracked["mlflow_loaded"]
    assert ours["harness_s"] > 100 * untracked["harness_s"]  # opening the MLflow run
    assert untracked["system"] == UNTRACKED and summarise([untracked])["phases"]["update_step"] > 0


@pytest.mark.slow
def test_tracked_runs_log_to_the_given_store(tmp_path):
    # --tracking-uri: what a tracking server or database costs instead of a SQLite file
    store = f"sqlite:///{tmp_path}/server/mlflow.db"
    spec = dataclasses.replace(QUICK, mlflow=True, tracking_uri=store)
    result = run_once("ppo_exp", spec, tmp_path)
    assert result["mlflow_loaded"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "rollout/reward_mean")
    assert [m.step for m in history] == list(range(1, QUICK.iterations + 1))


@pytest.mark.slow
def test_techniques_mode_undoes_each_speed_up_and_restores_it(base_model_path):
    from ppo_exp.bench import techniques

    results = techniques.measure(rounds=1, threads=1, batch_size=8, max_new_tokens=12,
                                 num_minibatches=2, ppo_epochs=1)
    assert set(results) == set(techniques.VARIANTS)
    assert all(r["update"] > 0 and r["rollout"] > 0 for r in results.values())
    assert "without fused AdamW" in techniques.table(results)


def test_technique_switches_restore_the_trainer():
    from types import SimpleNamespace

    from ppo_exp.bench import techniques
    from ppo_exp.ppo import losses
    from ppo_exp.ppo import replay as module

    lean, trim = losses.logprobs_and_entropy, module.minibatch_of
    with techniques.separate_softmaxes(None), techniques.full_length(None):
        assert losses.logprobs_and_entropy is not lean and module.minibatch_of is not trim
    assert losses.logprobs_and_entropy is lean and module.minibatch_of is trim
    fused = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], fused=True)
    holder = SimpleNamespace(replay=SimpleNamespace(optimizer=fused))
    with techniques.foreach_adamw(holder):
        assert holder.replay.optimizer is not fused
        assert holder.replay.optimizer.defaults["foreach"]
    assert holder.replay.optimizer is fused
    packed = SimpleNamespace(replay=SimpleNamespace(forward="packed", packed=True), model="padded")
    with techniques.padded(packed):  # the padded forward, and the padded rows' targets
        assert packed.replay.forward == "padded" and packed.replay.packed is False
    assert packed.replay.forward == "packed" and packed.replay.packed is True


@pytest.mark.slow
def test_memory_bench_reports_every_figure_for_a_small_qwen_shape(tmp_path):
    # The Qwen2.5-0.5B-shape memory benchmark, cut to one layer and a small vocabulary.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "ppo_exp.bench.memory", "--layers", "1", "--vocab", "2000",
         "--batch-size", "2", "--max-new-tokens", "4", "--iterations", "2",
         "--configs", "lora-shared-ckpt", "--json", str(tmp_path / "m.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads((tmp_path / "m.json").read_text())
    assert row["config"] == "lora-shared-ckpt" and row["device"] == "cpu"
    assert row["peak_gpu_gib"] is None and row["dtype"] == "float32"
    assert 0 < row["estimate_gib"] < row["peak_rss_gib"]
    assert row["tokens_per_s"] > 0 and row["seconds_per_iteration"] > 0
    assert 0 < row["trained_parameters"] < 10e6  # adapters and the value head only
    assert "lora-shared-ckpt" in done.stdout and "tokens/s" in done.stdout


def test_a_shape_with_its_own_vocabulary_pads_the_tokenizer_and_sizes_the_model(
    tmp_path, monkeypatch
):
    # "gpt2" is built this way at 50,257 tokens; a small shape stands in for it here
    from transformers import AutoConfig, AutoTokenizer

    from ppo_exp.bench import models

    monkeypatch.setitem(models.VOCAB_SIZES, "tiny-random", 1100)
    policy, reward = models.bench_models("tiny-random", tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    assert len(tokenizer) == AutoConfig.from_pretrained(policy).vocab_size == 1100
    assert AutoConfig.from_pretrained(reward).vocab_size == 1100
    assert tokenizer.decode([1099]) == "<pad-token-1099>"
    n_embd = AutoConfig.from_pretrained(policy).n_embd
    unpadded = models.parameter_count(policy) - (1100 - 1024) * n_embd
    monkeypatch.delitem(models.VOCAB_SIZES, "tiny-random")
    plain, _ = models.bench_models("tiny-random", tmp_path / "plain")
    assert models.parameter_count(plain) == unpadded
