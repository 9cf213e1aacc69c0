"""Every bad input is refused before any model loads: one line, exit status 2, no trace.

Each row goes through the command's own entry point (`ppo_exp.run.cli`, what
`python -m ppo_exp.run` calls) with its arguments in `sys.argv`, in this process, so
that ~90 rows cost seconds, not minutes of interpreter starts; a few rows also go
through the real command in a subprocess. Each row asserts the exit status, the one
line (key, value, what is accepted), and that neither the MLflow store nor the Optuna
storage was created.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import torch
from conftest import run_cli

from ppo_exp import run
from ppo_exp.config import PPOConfig

pytestmark = pytest.mark.slow  # ~110 launches of the command (in-process), no training

REWARDS = """
def score(texts: list[str]) -> list[float]:
    return [0.0] * len(texts)


def two_args(texts, extra):
    return texts


def wants_int(n: int) -> float:
    return 0.0


NOT_CALLABLE = 3
"""

# Study files for mistakes a command line cannot express (Hydra merges mappings).
STUDIES = {
    "bad_objective": "objectives: {eval/nope: maximize}",
    "bad_direction": "objectives: {eval/kl: upward}",
    "no_objectives": "objectives: {}",
    "bad_enqueue": "enqueue: [{gamma: 2.0}]",
    "minibatch_range": "params: {num_minibatches: {type: int, low: 1, high: 8}}",
    "float_range": "params: {gamma: {type: float, low: 0.5, high: 1.5}}",
    "bad_choice": "params: {kl_estimator: {type: categorical, choices: [k1, k2]}}",
    "unknown_param": "params: {clip_epsilon: {type: float, low: 0.1, high: 0.3}}",
    "seed_param": "params: {seed: {type: int, low: 0, high: 3}}",
    "reversed_range": "params: {lr: {type: float, low: 0.1, high: 0.01}}",
    "bad_type": "params: {lr: {type: real, low: 0.001, high: 0.01}}",
    "log_zero": "params: {lr: {type: float, low: 0.0, high: 0.01, log: true}}",
    "pruner_typo": "pruner: {name: median, n_startup_trial: 3}",
    "bad_percentile": "pruner: {name: percentile, percentile: 150.0}",
    "sampler_typo": "sampler: {name: random, sead: 0}",
}
GAMMA_SPACE = "params: {gamma: {type: float, low: 0.9, high: 1.0}}"


def study_yaml(name: str, body: str) -> str:
    lines = ["defaults: [/study_base]", "hydra:", "  sweeper:", f"    study_name: {name}"]
    if not body.startswith("params"):
        lines.append(f"    {GAMMA_SPACE}")
    if not body.startswith("objectives"):
        lines.append("    objectives: {eval/score_auc: maximize}")
    return "\n".join([*lines, f"    {body}", ""])


STUDY = ["-m", "study=core", "train=smoke"]
S = "hydra.sweeper."

# (arguments, fragments the one line must hold)
ROWS: list[tuple[list[str], list[str]]] = [
    # -- ranges of the run settings
    (["compile=true"], ["compile=True", "pack_minibatches=false"]),  # packing is the default
    (["gamma=1.5"], ["gamma=1.5", "a number in [0, 1]"]),
    (["gamma=nan"], ["gamma=nan", "[0, 1]"]),
    (["lam=-0.1"], ["lam=-0.1", "[0, 1]"]),
    (["lam=2"], ["lam=2", "[0, 1]"]),
    (["clip_eps=0"], ["clip_eps=0", "> 0"]),
    (["clip_eps=-1"], ["clip_eps=-1", "> 0"]),
    (["value_clip_eps=-1"], ["value_clip_eps=-1", "or null"]),
    (["max_grad_norm=0"], ["max_grad_norm=0", "or null"]),
    (["target_kl=-1"], ["target_kl=-1", "or null"]),
    (["vf_coef=-1"], ["vf_coef=-1", ">= 0"]),
    (["ent_coef=-0.5"], ["ent_coef=-0.5", ">= 0"]),
    (["kl_coef=-0.1"], ["kl_coef=-0.1", ">= 0"]),
    (["kl_estimator=k2"], ["kl_estimator='k2'", "'k1' or 'k3'"]),
    (["kl_horizon=0"], ["kl_horizon=0", ">= 1"]),
    (["missing_eos_penalty=inf"], ["missing_eos_penalty=inf", "a number, or null"]),
    (["lr=0"], ["lr=0", "> 0"]),
    (["lr=-1"], ["lr=-1", "> 0"]),
    (["adam_eps=0"], ["adam_eps=0", "> 0"]),
    (["ppo_epochs=0"], ["ppo_epochs=0", ">= 1"]),
    (["num_minibatches=5"], ["num_minibatches=5", "divisor of batch_size=64"]),
    (["num_minibatches=0"], ["num_minibatches=0", ">= 1"]),
    (["train=smoke", "num_minibatches=3"], ["num_minibatches=3", "batch_size=16"]),
    (["iterations=0"], ["iterations=0", ">= 1"]),
    (["batch_size=0"], ["batch_size=0", ">= 1"]),
    (["max_new_tokens=0"], ["max_new_tokens=0", ">= 1"]),
    (["temperature=0"], ["temperature=0", "> 0"]),
    (["eval_every=-1"], ["eval_every=-1", ">= 0"]),
    (["sample_every=-1"], ["sample_every=-1", ">= 0"]),
    (["eval_prompts=0"], ["eval_prompts=0", ">= 1"]),
    (["seed=-1"], ["seed=-1", "[0, 2**32 - 1]"]),
    (["seed=4294967296"], ["seed=4294967296", "[0, 2**32 - 1]"]),
    (["objective=reward"], ["objective='reward'", "a metric the trainer logs"]),
    (["objective=eval/nope"], ["objective='eval/nope'", "eval/reward_mean"]),
    (["checkpoint_every=-1"], ["checkpoint_every=-1", ">= 0, or null"]),
    # -- resume: a checkpoint that is not there, or made with another config
    (["resume=nowhere"], ["resume='nowhere'", "a checkpoint folder (holding checkpoint.json)"]),
    (["resume=empty_dir"], ["resume='empty_dir'", "a job dir holding checkpoints/"]),
    (["resume=old_job"], ["resume='old_job'", "differs in clip_eps: 0.3 there, 0.2 here"]),
    (["resume=lost_run"], ["resume='lost_run/checkpoints/iteration_0002'", "run 0123abcd"]),
    # -- types
    (["gamma=abc"], ["gamma='abc'", "a number"]),
    (["lr=null"], ["lr=None", "a number"]),
    (["ppo_epochs=1.5"], ["ppo_epochs=1.5", "an integer"]),
    (["seed=abc"], ["seed='abc'", "an integer"]),
    (["whiten_advantages=maybe"], ["whiten_advantages='maybe'", "true or false"]),
    (["target_kl=[1,2]"], ["target_kl=[1, 2]", "a number, or null"]),
    # -- keys outside the schema
    (["+clip_epsilon=0.1"], ["clip_epsilon=0.1", "did you mean clip_eps?"]),
    (["foo=1"], ["unknown key foo"]),
    (["model.foo=1"], ["unknown key model.foo"]),
    (["+model.foo=1"], ["model.foo=1", "unknown key"]),
    (["+reward.lable=0"], ["reward.lable=0", "did you mean reward.label?"]),
    (["+mlflow.uri=x"], ["mlflow.uri='x'", "unknown key"]),
    # -- presets and grammar
    (["reward=nope"], ["reward/nope", "classifier, function, learned, vader"]),
    (["gae=nope"], ["gae/nope", "default, mc, td"]),
    (["train=nope"], ["train/nope", "smoke"]),
    (["study=nope"], ["study/nope", "core"]),
    (["gamma=(1"], ["gamma=(1"]),
    # -- model and reward
    (["model.value_model=tied"], ["model.value_model='tied'", "not in the local Hugging Face"]),
    (["model.value_model=/no/critic"], ["model.value_model='/no/critic'", "does not exist"]),
    (["model.path=no-such-org/no-such-model"], ["not in the local Hugging Face cache"]),
    (["model.path=/no/such/model"], ["model.path='/no/such/model'", "does not exist"]),
    (["model.path=./missing_model"], ["model.path='./missing_model'", "does not exist"]),
    (["model.path=empty_dir"], ["model.path='empty_dir'", "config.json is missing"]),
    (["reward.kind=bogus"], ["reward.kind='bogus'", "vader | function | classifier"]),
    (["reward.text=prompt"], ["reward.text='prompt'", "'response' or 'full'"]),
    (["reward=function"], ["reward.function", "module:function"]),
    (["reward=function", "reward.function=nocolon"], ["reward.function='nocolon'"]),
    (
        ["reward=function", "reward.function=no_such_module_xyz:f"],
        ["no_such_module_xyz:f", "was not found"],
    ),
    (["reward=function", "reward.function=os:nope"], ["'os:nope'", "has no attribute"]),
    (["reward=function", "reward.function=my_rewards:NOT_CALLABLE"], ["not callable"]),
    (["reward=function", "reward.function=my_rewards:two_args"], ["two_args", "missing"]),
    (["reward=function", "reward.function=my_rewards:wants_int"], ["annotated"]),
    (["reward=classifier"], ["reward.path", "reward.kind=classifier"]),
    (["reward=classifier", "reward.path=/no/such/clf"], ["reward.path='/no/such/clf'"]),
    (["reward=classifier", "reward.path=clf", "reward.label=5"], ["reward.label=5", "[0, 1]"]),
    (["reward=classifier", "reward.path=clf", "reward.label=-1"], ["reward.label=-1"]),
    (["reward.input=tokens"], ["reward.input='tokens'", "when reward.kind=classifier"]),
    (["reward=classifier", "reward.path=clf", "reward.input=ids"], ["reward.input='ids'"]),
    (
        ["reward=classifier", "reward.path=clf", "reward.input=tokens"],
        ["reward.input='tokens'", "policy's tokenizer", "has no tokenizer"],
    ),
    # -- the tracking store
    (["mlflow.tracking_uri=http://127.0.0.1:9"], ["127.0.0.1:9", "did not accept"]),
    (["mlflow.tracking_uri=https://u:hunter2@127.0.0.1:9"], ["u:***@127.0.0.1:9"]),
    (["mlflow.tracking_uri=bogus://x"], ["mlflow.tracking_uri='bogus://x'", "sqlite:///"]),
    (["mlflow.tracking_uri=sqlite:////no/such/dir/m.db"], ["/no/such/dir", "does not exist"]),
    (["mlflow.tracking_uri=/no/such/dir/mlruns"], ["/no/such/dir", "does not exist"]),
    # -- plain sweeps: every job checked before the first one starts
    (["-m", "gamma=0.9,1.5"], ["gamma=1.5", "a number in [0, 1]"]),
    (["-m", "train=smoke", "num_minibatches=2,3"], ["num_minibatches=3", "batch_size=16"]),
    (["-m", "reward=vader,function"], ["reward.function", "module:function"]),
    (["-m", "lr=1e-4", "+clip_epsilon=0.1,0.2"], ["clip_epsilon=0.1", "did you mean clip_eps?"]),
    (["-m", "seed=range(-1,2)"], ["seed=-1", "[0, 2**32 - 1]"]),
    # -- studies from the command line
    ([*STUDY, f"{S}seeds=[]"], [f"{S}seeds=[]", "non-empty"]),
    ([*STUDY, f"{S}seeds=[-1]"], [f"{S}seeds=[-1]", "integers >= 0"]),
    ([*STUDY, f"{S}n_trials=0"], [f"{S}n_trials=0", ">= 1"]),
    ([*STUDY, f"{S}n_trials=abc"], [f"{S}n_trials='abc'", "an integer"]),
    ([*STUDY, f"{S}max_failures=0"], [f"{S}max_failures=0", ">= 1"]),
    ([*STUDY, f"{S}heartbeat_interval=0"], [f"{S}heartbeat_interval=0", ">= 1"]),
    ([*STUDY, f"{S}grace_period=5"], [f"{S}grace_period=5", "> heartbeat_interval=10"]),
    ([*STUDY, f"{S}sampler.name=foo"], [f"{S}sampler.name='foo'", "tpe | random"]),
    ([*STUDY, f"{S}pruner.name=foo"], [f"{S}pruner.name='foo'", "median | percentile"]),
    ([*STUDY, f"{S}pruner.n_warmup_steps=-3"], ["n_warmup_steps", "cannot be negative"]),
    ([*STUDY, f"{S}sampler.seed=abc"], [f"{S}sampler", "'seed': 'abc'"]),
    ([*STUDY, f"+{S}sampler.bogus=1"], [f"{S}sampler.bogus=1", "arguments of TPESampler"]),
    ([*STUDY, f"+{S}bogus=1"], [f"{S}bogus=1"]),
    ([*STUDY, f"{S}storage=bogus://x"], [f"{S}storage='bogus://x'", "sqlite:///FILE"]),
    (
        [*STUDY, f"{S}storage=postgresql://u:hunter2@127.0.0.1:9/db"],
        ["postgresql://u:***@127.0.0.1:9/db", "did not accept"],
    ),
    ([*STUDY, f"{S}storage=sqlite:////no/such/dir/o.db"], [f"{S}storage", "no folder"]),
    ([*STUDY, f"{S}storage=journal:/no/such/dir/j.log"], [f"{S}storage", "no folder"]),
    ([*STUDY, "seed=-1"], ["seed=-1"]),
    ([*STUDY, "gamma=2"], ["gamma=2"]),
    ([*STUDY, "reward=function", "reward.function=os:nope"], ["has no attribute"]),
    # -- study files
    ([*STUDY, f"{S}retry_failed=-1"], [f"{S}retry_failed=-1", "an integer >= 0"]),
    ([*STUDY, f"{S}parallel_seeds=maybe"], [f"{S}parallel_seeds='maybe'", "true or false"]),
    ([*STUDY[:1], "study=bad_objective"], [f"{S}objectives='eval/nope'", "eval/score"]),
    ([*STUDY[:1], "study=bad_direction"], [f"{S}objectives.eval/kl='upward'"]),
    ([*STUDY[:1], "study=no_objectives"], [f"{S}objectives={{}}", "one or two metrics"]),
    ([*STUDY[:1], "study=bad_enqueue"], [f"{S}enqueue[0]", "gamma=2.0"]),
    ([*STUDY[:1], "study=minibatch_range"], ["params.num_minibatches", "num_minibatches=3"]),
    ([*STUDY[:1], "study=float_range"], [f"{S}params.gamma", "gamma=1.5"]),
    ([*STUDY[:1], "study=bad_choice"], [f"{S}params.kl_estimator", "'k2'"]),
    ([*STUDY[:1], "study=unknown_param"], [f"{S}params.clip_epsilon", "a top-level config key"]),
    ([*STUDY[:1], "study=seed_param"], [f"{S}params.seed"]),
    ([*STUDY[:1], "study=reversed_range"], [f"{S}params.lr", "a valid float range"]),
    ([*STUDY[:1], "study=bad_type"], [f"{S}params.lr.type='real'", "float | int | categorical"]),
    ([*STUDY[:1], "study=log_zero"], [f"{S}params.lr", "a valid float range"]),
    ([*STUDY[:1], "study=pruner_typo"], [f"{S}pruner.n_startup_trial=3", "MedianPruner"]),
    ([*STUDY[:1], "study=bad_percentile"], [f"{S}pruner", "percentile"]),
    ([*STUDY[:1], "study=sampler_typo"], [f"{S}sampler.sead=0", "RandomSampler"]),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch, mlflow_uri, base_model_path):
    """A working directory with a reward module, checkpoints and study files to name."""
    (tmp_path / "my_rewards.py").write_text(REWARDS)
    for job, cfg, meta in (
        ("old_job", PPOConfig(clip_eps=0.3), {}),  # made with another config
        ("lost_run", PPOConfig(), {"mlflow_run_id": "0123abcd"}),  # its run is elsewhere
    ):
        folder = tmp_path / job / "checkpoints" / "iteration_0002"
        folder.mkdir(parents=True)
        info = {"iteration": 2, "config": dataclasses.asdict(cfg), "meta": meta}
        (folder / "checkpoint.json").write_text(json.dumps(info))
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "clf").mkdir()
    (tmp_path / "clf" / "config.json").write_text(json.dumps({"id2label": {"0": "n", "1": "p"}}))
    (tmp_path / "studies").mkdir()
    for name, body in STUDIES.items():
        (tmp_path / "studies" / f"{name}.yaml").write_text(study_yaml(name, body))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    run.register_studies()  # ./studies, as the command registers them when it starts
    yield tmp_path
    sys.modules.pop("my_rewards", None)


def assert_refused(code: object, err: str, fragments: list[str], workdir) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: invalid config: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "hunter2" not in err  # passwords in URLs are masked
    assert not (workdir / "mlflow.db").exists()  # no MLflow run was started
    assert not (workdir / "optuna.db").exists()  # no study row was written
    assert not (workdir / "outputs").exists()  # no empty Hydra run folder
    assert not (workdir / "multirun").exists()  # nor sweep folder


def test_the_table_holds_at_least_60_distinct_bad_inputs():
    assert len({" ".join(args) for args, _ in ROWS}) == len(ROWS) >= 60


@pytest.mark.parametrize("args,fragments", ROWS, ids=[" ".join(a) for a, _ in ROWS])
def test_bad_input_is_refused_in_one_line(args, fragments, workdir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ppo_exp.run", *args])
    with pytest.raises(SystemExit) as exit_info:
        run.cli()
    assert_refused(exit_info.value.code, capsys.readouterr().err, fragments, workdir)


@pytest.mark.parametrize(
    "args,fragments",
    [ROWS[0], (["+clip_epsilon=0.1"], ["did you mean clip_eps?"]), ROWS[-3]],
    ids=["range", "unknown key", "study file"],
)
def test_the_real_command_refuses_the_same_way(args, fragments, workdir):
    result = run_cli(*args, cwd=workdir)
    assert "Traceback" not in result.stderr
    assert_refused(result.returncode, result.stderr, fragments, workdir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: model.device=cuda is valid")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_refused(device, workdir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ppo_exp.run", f"model.device={device}"])
    with pytest.raises(SystemExit) as exit_info:
        run.cli()
    fragments = [f"model.device='{device}'", "CUDA is not available here"]
    assert_refused(exit_info.value.code, capsys.readouterr().err, fragments, workdir)
