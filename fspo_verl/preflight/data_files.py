"""Every local data file a run reads: present, in a format verl reads, non-empty, with the columns verl uses.

verl's ``RLHFDataset`` loads ``data.train_files``/``data.val_files`` in the TaskRunner: a missing file, an
empty parquet, a CSV, a file that is not parquet, or a parquet without the columns verl reads failed there
after Ray had started (FileNotFoundError, DatasetGenerationError, ValueError, ArrowInvalid,
ZeroDivisionError). Here each local parquet file's footer is read (``pyarrow.parquet.ParquetFile``: the
schema and the row count, not the data), and JSON/JSONL files have their first record parsed.

Columns verl 0.9.1 reads from every row (``utils/dataset/rl_dataset.py`` and the reward-loop managers in
``experimental/reward_loop/reward_manager/``): ``data.prompt_key`` (default ``prompt``), ``data_source``
(the managers read it by that literal name; ``data.reward_fn_key`` too), and ``reward_model`` with a
``ground_truth`` field. A dataset class of one's own (``data.custom_cls.path``) reads what it likes, so then
only the files' presence is checked. Remote paths (``hdfs://``, ``s3://``, ...) are named in a warning.

Contents: a column of the right name can still hold what verl cannot use (a null prompt failed in the
TaskRunner with ``TypeError: 'NoneType' object is not iterable`` in ``_build_messages``; plain-string prompts
trained for real on one-token prompts). The first row group, at most :data:`HEAD_ROWS` rows, is read and each
row checked as verl uses it: the prompt a non-empty list of ``{role, content}`` messages (what
``_build_messages`` passes to ``apply_chat_template``), ``data_source`` and ``data.reward_fn_key`` not null,
``reward_model`` a dict whose ``ground_truth`` is not null (what the reward managers read).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from fspo_verl.common.config_lookup import config_value
from fspo_verl.preflight.locality import report_missing
from fspo_verl.preflight.messages import problem
from fspo_verl.preflight.registry import Findings, register_check

FILE_KEYS = ("data.train_files", "data.val_files")
#: what RLHFDataset reads (``_read_files_and_tokenize``): by extension
PARQUET = (".parquet",)
JSON = (".json", ".jsonl")
#: the field of the ``reward_model`` column the reward managers read
GROUND_TRUTH = "ground_truth"
#: rows read of each file (from its first row group): enough to catch a column written wrongly, cheap at any size
HEAD_ROWS = 1000
#: the fields of a chat message the tokenizer's chat template reads
MESSAGE_FIELDS = ("role", "content")


def _paths(value) -> list:
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def required_columns(config: DictConfig) -> list[str]:
    """The columns every row must have, in the order a user would add them."""
    columns = [config_value(config, "data.prompt_key", "prompt"), "data_source", config_value(config, "data.reward_fn_key", "data_source"), "reward_model"]
    return list(dict.fromkeys(c for c in columns if c))


def _parquet_columns(path: Path) -> tuple[dict[str, object], int]:
    """(column name -> arrow type, number of rows), from the footer only."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path)
    schema = meta.schema_arrow
    return {field.name: field.type for field in schema}, meta.metadata.num_rows


def _json_columns(path: Path) -> tuple[dict[str, object], int]:
    """(keys of the first record -> None, 1 if there is a record else 0)."""
    with path.open("rb") as handle:
        head = handle.read(1 << 20).decode("utf-8", errors="replace")
    if path.suffix == ".jsonl":
        line = next((line for line in head.splitlines() if line.strip()), "")
        if not line:
            return {}, 0
        record = json.loads(line)
    else:
        text = path.read_text()
        records = json.loads(text) if text.strip() else []
        if isinstance(records, dict):
            return dict.fromkeys(records), 1
        if not records:
            return {}, 0
        record = records[0]
    return (dict.fromkeys(record) if isinstance(record, dict) else {}), 1


def file_problems(config: DictConfig, key: str, raw: str, custom: bool) -> Findings:
    found = Findings()
    if not isinstance(raw, str) or not raw:
        found.errors.append(problem(key, raw, "not a file path", f"set {key} to a parquet file (or a list of them)"))
        return found
    if is_remote(raw):
        found.warnings.append(f"{key}={raw} is a remote path; the driver cannot check it, so the TaskRunner will be the first to read it.")
        return found
    path = Path(os.path.expanduser(raw.removeprefix("file://")))
    where = "data preparation: see recipes/data/ (e.g. python recipes/data/prepare_gsm8k.py --out DIR)"
    if not path.exists():
        report_missing(found, problem(key, raw, "the file does not exist", f"give an existing file, or create it with the {where}"))
        return found
    if not path.is_file():
        found.errors.append(problem(key, raw, "is a directory, not a file", f"name the parquet file(s) inside it, e.g. {key}=[{path}/train.parquet]"))
        return found
    if custom:
        return found
    if path.suffix not in PARQUET + JSON:
        found.errors.append(problem(key, raw, f"verl reads only {', '.join(PARQUET + JSON)} files (by extension)", f"convert it to parquet (pandas: pd.read_csv(f).to_parquet('x.parquet')) and point {key} at it"))
        return found
    try:
        columns, rows = _parquet_columns(path) if path.suffix in PARQUET else _json_columns(path)
    except Exception as err:  # noqa: BLE001 - ArrowInvalid, OSError, JSONDecodeError
        kind = "parquet" if path.suffix in PARQUET else "JSON"
        found.errors.append(problem(key, raw, f"not a readable {kind} file ({type(err).__name__}: {str(err).splitlines()[0]})", f"re-create it with the {where}"))
        return found
    if rows == 0:
        found.errors.append(problem(key, raw, "the file has no rows", f"fill it, or re-create it with the {where}"))
        return found
    missing = [c for c in required_columns(config) if c not in columns]
    if missing:
        found.errors.append(problem(
            key, raw, f"has no column {', '.join(missing)} (it has: {', '.join(columns) or 'none'}); verl reads "
            f"{', '.join(required_columns(config))} from every row",
            "write the data in verl's format (recipes/data/ shows it), or set data.prompt_key / data.reward_fn_key to your column names",
        ))
    else:
        reward_type = columns.get("reward_model")
        names = getattr(reward_type, "names", None) if reward_type is not None else None
        if names is not None and GROUND_TRUTH not in names:
            found.errors.append(problem(key, raw, f"its reward_model column has no {GROUND_TRUTH} field (it has: {', '.join(names)}); the reward managers read reward_model.{GROUND_TRUTH}", "write reward_model as {'ground_truth': ..., 'style': 'rule'}"))
    if not found.errors:
        found.errors.extend(content_problems(config, key, raw, path))
    if key == "data.train_files" and not found.errors:
        batch = config_value(config, "data.train_batch_size")
        if isinstance(batch, int) and path.suffix in PARQUET and rows < batch and len(_paths(config_value(config, key))) == 1:
            found.errors.append(problem(
                "data.train_batch_size", batch, f"{raw} has only {rows} rows, and verl drops an incomplete last batch, so an epoch has no step",
                f"set data.train_batch_size to at most {rows}, or use more data",
            ))
    return found


def _head_rows(path: Path) -> list[dict]:
    """The first row group of a parquet file, at most :data:`HEAD_ROWS` rows (the first record of a JSON file)."""
    if path.suffix in PARQUET:
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(path)
        table = handle.read_row_group(0) if handle.metadata.num_row_groups else None
        return table.slice(0, HEAD_ROWS).to_pylist() if table is not None else []
    if path.suffix == ".jsonl":
        with path.open("rb") as handle:
            head = handle.read(1 << 20).decode("utf-8", errors="replace")
        line = next((line for line in head.splitlines() if line.strip()), "")
        return [json.loads(line)] if line else []
    records = json.loads(path.read_text() or "[]")
    return [records] if isinstance(records, dict) else list(records[:HEAD_ROWS])


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def prompt_problem(prompt) -> str | None:
    """What is wrong with one row's prompt for verl's ``RLHFDataset._build_messages`` and the chat template, or None."""
    if prompt is None:
        return "is null"
    if isinstance(prompt, str):
        return "is a plain string, not a list of chat messages (verl would template it as one message of its characters)"
    if not isinstance(prompt, (list, tuple)):
        return f"is a {_kind(prompt)}, not a list of chat messages"
    if not prompt:
        return "is an empty list of messages"
    for number, message in enumerate(prompt):
        if not isinstance(message, dict):
            return f"message {number} is a {_kind(message)}, not a {{role, content}} dict"
        absent = [field for field in MESSAGE_FIELDS if message.get(field) is None]
        if absent:
            return f"message {number} has no {' or '.join(absent)} (it has: {', '.join(k for k, v in message.items() if v is not None) or 'nothing'})"
        if not isinstance(message["content"], (str, list)):
            return f"message {number}'s content is a {_kind(message['content'])}, not text"
    return None


def row_problem(config: DictConfig, row: dict) -> tuple[str, str] | None:
    """(column, what is wrong) of the first column of ``row`` that verl cannot use, or None."""
    prompt_key = config_value(config, "data.prompt_key", "prompt")
    why = prompt_problem(row.get(prompt_key))
    if why:
        return prompt_key, why
    for column in required_columns(config):
        if column not in (prompt_key, "reward_model") and row.get(column) is None:
            return column, "is null"
    reward = row.get("reward_model")
    if not isinstance(reward, dict):
        return "reward_model", f"is {_kind(reward)}, not a dict with {GROUND_TRUTH}"
    if reward.get(GROUND_TRUTH) is None:
        return f"reward_model.{GROUND_TRUTH}", "is null (the reward function would score against None)"
    return None


def content_problems(config: DictConfig, key: str, raw: str, path: Path) -> list[str]:
    """The first row group (at most :data:`HEAD_ROWS` rows) read and each row checked as verl will use it."""
    try:
        rows = _head_rows(path)
    except Exception as err:  # noqa: BLE001 - ArrowInvalid, OSError, JSONDecodeError: named like a bad footer
        return [problem(key, raw, f"its first rows cannot be read ({type(err).__name__}: {str(err).splitlines()[0]})", "re-create the file")]
    bad = [(number, found) for number, row in enumerate(rows) if (found := row_problem(config, row if isinstance(row, dict) else {}))]
    if not bad:
        return []
    number, (column, why) = bad[0]
    share = f"{len(bad)} of the first {len(rows)} rows are bad" if len(bad) > 1 else f"1 of the first {len(rows)} rows is bad"
    return [problem(
        key, raw, f"row {number}'s {column} {why}; {share}",
        "write each prompt as a list of chat messages [{'role': 'user', 'content': '...'}] and each reward_model as "
        "{'ground_truth': ..., 'style': 'rule'} with no nulls (recipes/data/ shows the format), or drop the bad rows",
    )]


@register_check
def check_data_files(config: DictConfig) -> Findings:
    found = Findings()
    custom = bool(config_value(config, "data.custom_cls.path"))
    for key in FILE_KEYS:
        try:
            value = config_value(config, key)
        except Exception as err:  # noqa: BLE001 - an interpolation (e.g. the demo's asset resolver) that fails
            found.errors.append(problem(key, "...", f"does not resolve ({type(err).__name__}: {err})", f"set {key} to a parquet file"))
            continue
        if value is None or (isinstance(value, (list, ListConfig)) and not value):
            found.errors.append(problem(key, value, "no data file is set", f"set {key} to a parquet file (or a list of them)"))
            continue
        for raw in _paths(value):
            found.extend(file_problems(config, key, raw, custom))
    return found
