"""The checkpoint a resume would load: present, complete and readable, checked in the driver.

How verl 0.9.1 resumes (``PPOTrainer._load_checkpoint``, trainer/ppo/v1/trainer_base.py):

- ``trainer.resume_mode=auto``: read the step number from
  ``<trainer.default_local_dir>/latest_checkpointed_iteration.txt`` (``find_latest_ckpt_path``) and load
  ``global_step_<N>/``; no tracker file, or no such folder, means training from scratch;
- ``resume_mode=resume_path``: load ``trainer.resume_from_path``, which must contain ``global_step_``;
- ``resume_mode=disable``: start from scratch.

The workers then ``torch.load`` ``actor/`` (and ``critic/`` when a critic is used), one
``{model,optim,extra_state}_world_size_<W>_rank_<r>.pt`` per rank, and ``data.pt``. A shard truncated by a
crash during saving failed there, tens of seconds in, with ``EOFError: Ran out of input`` and no file
name. Here every file of the folder is checked without loading it:

- any file of 0 bytes;
- ``*.pt``: torch's zip container must have its central directory (``zipfile``: the end of the file);
- ``*.safetensors``: the 8-byte header length and the header's last tensor offset must match the size;
- ``*.json``: must parse;
- ``*_world_size_<W>_rank_<r>.pt``: all ranks 0..W-1 present for each kind.

A damaged folder is named with its first damaged file, and the message gives the exact overrides that
resume from the newest intact ``global_step_<K>`` instead (or start afresh when there is none).

A tracker that names a step whose folder is gone made verl train from scratch with a warning. Here
``fspo-verl train`` resumes from the newest intact folder below the named step instead and says so
(:func:`apply_resume_fallback`), or, when none is left, stops with the override that starts afresh on
purpose. verl writes the tracker last, once a save has finished, so it is the mark of a complete
checkpoint: a folder above the tracker's step (a save cut short, e.g. by a full disk) is never taken.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from pathlib import Path

from omegaconf import DictConfig

from fspo_verl.common.config_lookup import config_value
from fspo_verl.common.critic import critic_used
from fspo_verl.preflight.locality import report_missing
from fspo_verl.preflight.messages import problem
from fspo_verl.preflight.registry import Findings, register_check

TRACKER = "latest_checkpointed_iteration.txt"
STEP_DIR = re.compile(r"^global_step_(\d+)$")
RANK_FILE = re.compile(r"^(?P<kind>\w+?)_world_size_(?P<world>\d+)_rank_(?P<rank>\d+)\.pt$")


def _pt_damage(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"not a complete torch.save archive ({err})"
    return None


def _safetensors_damage(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if 8 + length > size:
                return f"header says {length} bytes but the file has {size}"
            header = json.loads(handle.read(length))
    except (struct.error, ValueError, OSError) as err:
        return f"unreadable safetensors header ({err})"
    ends = [info["data_offsets"][1] for name, info in header.items() if name != "__metadata__"]
    if ends and 8 + length + max(ends) > size:
        return f"truncated: tensors end at byte {8 + length + max(ends)} but the file has {size}"
    return None


def _json_damage(path: Path) -> str | None:
    try:
        json.loads(path.read_text())
    except (ValueError, OSError) as err:
        return f"not valid JSON ({err})"
    return None


READERS = {".pt": _pt_damage, ".safetensors": _safetensors_damage, ".json": _json_damage}


def damaged_files(step_dir: Path, parts: tuple[str, ...] = ("actor",)) -> list[tuple[Path, str]]:
    """(file, what is wrong) for every damaged or missing piece of a ``global_step_<N>`` folder."""
    damage: list[tuple[Path, str]] = []
    for part in parts:
        if not (step_dir / part).is_dir():
            damage.append((step_dir / part, "missing (the save did not finish)"))
    ranks: dict[tuple[Path, str, int], set[int]] = {}
    for path in sorted(p for p in step_dir.rglob("*") if p.is_file()):
        match = RANK_FILE.match(path.name)
        if match:
            ranks.setdefault((path.parent, match["kind"], int(match["world"])), set()).add(int(match["rank"]))
        reader = READERS.get(path.suffix)
        why = "0 bytes" if path.stat().st_size == 0 else reader(path) if reader else None
        if why:
            damage.append((path, why))
    for (folder, kind, world), present in sorted(ranks.items()):
        absent = sorted(set(range(world)) - present)
        if absent:
            damage.append((folder / f"{kind}_world_size_{world}_rank_{absent[0]}.pt", f"missing ({len(absent)} of {world} ranks absent)"))
    return damage


def step_dirs(root: Path) -> dict[int, Path]:
    if not root.is_dir():
        return {}
    return {int(m[1]): p for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))}


def _parts(config: DictConfig) -> tuple[str, ...]:
    return ("actor", "critic") if critic_used(config) else ("actor",)


def _fallback(root: Path, below: int, parts: tuple[str, ...]) -> Path | None:
    for step, folder in sorted(step_dirs(root).items(), reverse=True):
        if step < below and not damaged_files(folder, parts):
            return folder
    return None


def _damage_message(key: str, value: str, folder: Path, damage: list[tuple[Path, str]], root: Path, parts) -> str:
    step = int(STEP_DIR.match(folder.name)[1])
    first, why = damage[0]
    more = f" (and {len(damage) - 1} more damaged file(s))" if len(damage) > 1 else ""
    intact = _fallback(root, step, parts)
    if intact is not None:
        fix = (f"resume from the last intact checkpoint with trainer.resume_mode=resume_path "
               f"trainer.resume_from_path={intact.resolve()} (or delete {folder} and write "
               f"{STEP_DIR.match(intact.name)[1]} into {root / TRACKER})")
    else:
        fix = f"no intact checkpoint is left under {root}; start afresh with trainer.resume_mode=disable (or delete {folder})"
    return problem(key, value, f"the checkpoint to resume, {folder}, is damaged: {first} is {why}{more}", fix)


def checkpoint_problems(config: DictConfig) -> Findings:
    found = Findings()
    mode = config_value(config, "trainer.resume_mode")
    parts = _parts(config)
    if mode == "auto":
        raw = config_value(config, "trainer.default_local_dir")
        if not isinstance(raw, str) or "://" in raw:
            return found
        root = Path(os.path.expanduser(raw))
        tracker = root / TRACKER
        if not tracker.is_file():
            if step_dirs(root):
                found.warnings.append(
                    f"trainer.resume_mode=auto: {root} holds {', '.join(sorted(p.name for p in step_dirs(root).values()))} but no "
                    f"{TRACKER}, which verl writes when a save has finished: no save finished, so training starts from scratch "
                    f"(to load one anyway: trainer.resume_mode=resume_path trainer.resume_from_path=<its folder>).")
            return found
        text = tracker.read_text().strip()
        if not text.isdigit():
            found.errors.append(problem("trainer.default_local_dir", raw, f"{tracker} holds {text!r}, not a step number", "write the step of an intact global_step_<N> folder into it, or set trainer.resume_mode=disable"))
            return found
        folder = root / f"global_step_{int(text)}"
        if not folder.is_dir():
            intact = _fallback(root, int(text), parts)
            if intact is not None:
                found.warnings.append(
                    f"trainer.resume_mode=auto: {tracker} names step {text}, but {folder} does not exist; `fspo-verl train` "
                    f"resumes from the newest intact checkpoint below it, {intact} (verl alone would train from scratch). "
                    f"To choose: trainer.resume_mode=resume_path trainer.resume_from_path=<a global_step_N folder>, or "
                    f"trainer.resume_mode=disable to start afresh.")
            else:
                found.errors.append(problem(
                    "trainer.resume_mode", mode, f"{tracker} names step {text}, but {folder} does not exist and no intact "
                    f"global_step_<N> below it is left under {root}, so verl would train from scratch without saying so",
                    "start afresh on purpose with trainer.resume_mode=disable, or restore the checkpoint folder"))
            return found
        damage = damaged_files(folder, parts)
        if damage:
            found.errors.append(_damage_message("trainer.resume_mode", mode, folder, damage, root, parts))
    elif mode == "resume_path":
        raw = config_value(config, "trainer.resume_from_path")
        key = "trainer.resume_from_path"
        if not isinstance(raw, str) or "global_step_" not in raw:
            found.errors.append(problem(key, raw, "with trainer.resume_mode=resume_path it must name a global_step_<N> folder", f"set {key}=<checkpoint dir>/global_step_<N>"))
            return found
        if "://" in raw:
            return found
        folder = Path(os.path.expanduser(raw))
        if not folder.is_dir():
            report_missing(found, problem(key, raw, "the folder does not exist", f"pick one of: {', '.join(str(p) for _, p in sorted(step_dirs(folder.parent).items())) or 'none found next to it'}"))
            return found
        damage = damaged_files(folder, parts)
        if damage and STEP_DIR.match(folder.name):
            found.errors.append(_damage_message(key, raw, folder, damage, folder.parent, parts))
    return found


def resume_fallback(config: DictConfig) -> Path | None:
    """With ``trainer.resume_mode=auto`` and a tracker naming a step whose folder is gone: the newest intact
    ``global_step_<N>`` below it (None when resume needs no fallback or none is intact). Only steps below the
    tracker's count: verl writes the tracker when a save has finished, so a folder above it may be partial."""
    raw = config_value(config, "trainer.default_local_dir")
    if config_value(config, "trainer.resume_mode") != "auto" or not isinstance(raw, str) or "://" in raw:
        return None
    root = Path(os.path.expanduser(raw))
    tracker = root / TRACKER
    text = tracker.read_text().strip() if tracker.is_file() else ""
    if not text.isdigit() or (root / f"global_step_{int(text)}").is_dir():
        return None
    return _fallback(root, int(text), _parts(config))


def apply_resume_fallback(config: DictConfig) -> Path | None:
    """Point the config at :func:`resume_fallback`'s folder (``resume_mode=resume_path``); returns it, or None."""
    from omegaconf import open_dict

    intact = resume_fallback(config)
    if intact is not None:
        with open_dict(config):
            config.trainer.resume_mode = "resume_path"
            config.trainer.resume_from_path = str(intact.resolve())
    return intact


@register_check
def check_checkpoints(config: DictConfig) -> Findings:
    return checkpoint_problems(config)
