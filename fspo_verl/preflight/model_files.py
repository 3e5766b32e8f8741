"""The model a run loads: a local directory with a config and a tokenizer, loaded as the workers load it.

verl's workers build ``HFModelConfig`` from ``actor_rollout_ref.model`` (and ``critic.model``), which
reads ``config.json``, the tokenizer and the generation config. A missing directory used to surface as
"Repo id must be in the form ..." inside a worker, because a path that is not a directory is taken for a
Hub id. Here, for a local path, the directory and its files are checked and the same dataclass is built
in the driver, and the weights the model names (its index's ``weight_map``, or ``model.safetensors`` /
``pytorch_model.bin``) must exist and parse: a safetensors header only (8-byte length, JSON, last tensor's
end against the file size), never the tensors. A truncated ``model.safetensors`` failed in
``actor_rollout_init_model`` (``SafetensorError: invalid header length``) after Ray had started. Remote paths (``hdfs://``, ``s3://``, ...) and Hub ids (``Qwen/Qwen3-8B-Base``) cannot be
checked without downloading: they get a warning that names them, never an error.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fspo_verl.common.config_lookup import config_value
from fspo_verl.common.critic import critic_used
from fspo_verl.preflight.locality import report_missing
from fspo_verl.preflight.messages import error_text, problem
from fspo_verl.preflight.registry import Findings, register_check

#: a Hugging Face Hub id: owner/name, nothing else (no leading ./ or /, no scheme)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: files any one of which makes a tokenizer loadable by transformers' AutoTokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")
#: weight indexes (sharded weights) and single weight files, in the order transformers looks for them
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: (model section, the condition under which a worker loads it)
MODEL_SECTIONS = ("actor_rollout_ref.model", "critic.model")


def is_remote(path: Any) -> bool:
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def is_hub_id(path: Any) -> bool:
    return isinstance(path, str) and bool(HUB_ID.match(path)) and not Path(os.path.expanduser(path)).exists()


def local_model_dir(path: Any) -> Path | None:
    """The local directory ``path`` names, or None for a remote path or a Hub id (which the driver cannot check)."""
    if not isinstance(path, str) or not path or is_remote(path) or is_hub_id(path):
        return None
    return Path(os.path.expanduser(path.removeprefix("file://")))



def model_problems(config: DictConfig, section: str) -> Findings:
    found = Findings()
    key = f"{section}.path"
    try:
        path = config_value(config, key)
    except Exception as err:  # noqa: BLE001 - an interpolation that does not resolve
        found.errors.append(problem(key, "...", f"does not resolve ({err})", "give a model directory or a Hub id"))
        return found
    if path is None:
        found.errors.append(problem(key, path, "no model is set", f"set {key}=<local model dir or Hub id>, or pick a model= preset"))
        return found
    if is_remote(path) or is_hub_id(path):
        kind = "a remote path" if is_remote(path) else "a Hub id"
        found.warnings.append(
            f"{key}={path} is {kind}; the driver cannot check its config and tokenizer without downloading, "
            "so the workers will be the first to read it (pre-download it and pass the local directory to have it checked)."
        )
        return found
    folder = local_model_dir(path)
    if not folder.is_dir():
        message = problem(key, path, "is a file, not a model directory" if folder.exists() else "does not exist",
                          f"set {key} to a directory with config.json and tokenizer files, or to a Hub id like Qwen/Qwen2.5-0.5B-Instruct")
        if folder.exists():
            found.errors.append(message)
        else:
            report_missing(found, message)
        return found
    for sub_key in ("hf_config_path", "tokenizer_path"):
        other = config_value(config, f"{section}.{sub_key}")
        if other is not None and local_model_dir(other) is not None and not local_model_dir(other).is_dir():
            found.errors.append(problem(f"{section}.{sub_key}", other, "does not exist", f"set {section}.{sub_key}=null to use {key}, or a directory that exists"))
    config_dir = local_model_dir(config_value(config, f"{section}.hf_config_path") or path)
    config_file = config_dir / "config.json"
    if not config_file.is_file():
        found.errors.append(problem(key, path, f"has no config.json ({config_file})", f"point {key} at the directory that holds the model's config.json"))
    else:
        try:
            json.loads(config_file.read_text())
        except (OSError, ValueError) as err:
            found.errors.append(problem(key, path, f"{config_file} is not valid JSON ({err})", "re-copy the model's config.json"))
    tokenizer_dir = local_model_dir(config_value(config, f"{section}.tokenizer_path") or path)
    if not any((tokenizer_dir / name).is_file() for name in TOKENIZER_FILES):
        found.errors.append(problem(key, path, f"has no tokenizer files (none of {', '.join(TOKENIZER_FILES)} in {tokenizer_dir})", f"copy the tokenizer into it, or set {section}.tokenizer_path"))
    if not found.errors:
        found.errors.extend(weight_problems(key, path, folder))
    if not found.errors:
        found.errors.extend(_build(config, section))
    return found


def weight_files(folder: Path) -> tuple[list[Path], Path | None]:
    """(the weight files the model names, the index that names them or None): an index's ``weight_map``,
    else the single-file weights, else []."""
    for index_name in INDEXES:
        index = folder / index_name
        if index.is_file():
            names = json.loads(index.read_text()).get("weight_map", {}).values()
            return [folder / name for name in sorted(set(names))], index
    return [folder / name for name in SINGLE_WEIGHTS if (folder / name).is_file()], None


def weight_problems(key: str, path: str, folder: Path) -> list[str]:
    """Every weight file present and readable: a safetensors header (8-byte length + JSON) and its last
    tensor's end against the file size, a torch .bin's zip directory; nothing is loaded."""
    from fspo_verl.preflight.checkpoints import READERS

    fix = f"re-copy the model's weights into {folder} (or point {key} at a complete model directory)"
    try:
        files, index = weight_files(folder)
    except (OSError, ValueError, AttributeError) as err:
        return [problem(key, path, f"its weight index cannot be read ({type(err).__name__}: {err})", fix)]
    if not files:
        return [problem(key, path, f"has no weights (none of {', '.join(INDEXES + SINGLE_WEIGHTS)} in {folder})", fix)]
    for file in files:
        if not file.is_file():
            return [problem(key, path, f"{file.name}, named by {index.name}, does not exist", fix)]
        reader = READERS.get(file.suffix)
        why = "0 bytes" if file.stat().st_size == 0 else reader(file) if reader else None
        if why:
            return [problem(key, path, f"the weights file {file} is damaged: {why}", fix)]
    return []


def _build(config: DictConfig, section: str) -> list[str]:
    """Build ``HFModelConfig`` as the workers do: loads the tokenizer, the processor and the HF config."""
    from verl.utils.config import omega_conf_to_dataclass

    key = f"{section}.path"
    try:
        node = OmegaConf.create(OmegaConf.to_container(config_value(config, section), resolve=True))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            omega_conf_to_dataclass(node)
    except Exception as err:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError/...
        return [problem(key, config_value(config, key), f"the workers cannot load this model ({error_text(err)})", f"check the files in {config_value(config, key)} (config.json, tokenizer) or the other {section}.* keys")]
    return []


@register_check
def check_model_files(config: DictConfig) -> Findings:
    found = Findings()
    for section in MODEL_SECTIONS:
        if section == "critic.model" and not critic_used(config, unreadable=None):
            continue
        found.extend(model_problems(config, section))
    return found
