"""Shared by prepare_gsm8k.py and prepare_math.py: read a source split, build verl rows, write parquet.

A verl RL row (what ``verl.utils.dataset.rl_dataset.RLHFDataset`` reads and the reward loop scores):

    data_source   str            picks the scorer in verl.utils.reward_score.default_compute_score
    prompt        list[dict]     chat messages, [{"role": "user", "content": ...}]
    ability       str            "math"
    reward_model  dict           {"style": "rule", "ground_truth": str}
    extra_info    dict           {"split": str, "index": int, ...}; verl reads extra_info["index"]

Sources come from the Hugging Face hub (``datasets`` is imported only then; it is not a dependency of
fspo_verl) or, with ``--from-local FILE``, from a jsonl file whose rows carry a column naming the output
they belong to (default column ``split``), so that the scripts run offline and in tests.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

#: builds one row from (source record, index in its split); None means "no usable answer" (counted, reported)
RowBuilder = Callable[[dict, int], "dict | None"]


class PrepError(Exception):
    """A clear, fatal problem with the input: ``run`` prints it and exits with status 2."""


def run(main: Callable[[], int]) -> None:
    try:
        code = main()
    except PrepError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)


def chat(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def verl_row(data_source: str, content: str, ground_truth: str, split: str, index: int, **extra) -> dict:
    return {
        "data_source": data_source,
        "prompt": chat(content),
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": {"split": split, "index": index, **extra},
    }


def read_local(path: str, split_column: str) -> dict[str, list[dict]]:
    """jsonl rows grouped by their ``split_column`` value."""
    groups: dict[str, list[dict]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise PrepError(f"--from-local {path}: line {line_no} is not JSON ({err}); write one JSON object per line.") from None
            if split_column not in record:
                raise PrepError(
                    f"--from-local {path}: line {line_no} has no '{split_column}' field; every row must name the output "
                    f"it belongs to (or pass --local-split-column with the field that does)."
                )
            groups.setdefault(str(record[split_column]), []).append(record)
    return groups


def load_hub(dataset_id: str, config: str | None, split: str) -> Iterable[dict]:
    try:
        import datasets
    except ImportError:
        raise PrepError(
            "the Hugging Face `datasets` package is needed to download from the hub; `pip install datasets`, "
            "or pass --from-local FILE with a jsonl copy."
        ) from None
    return datasets.load_dataset(dataset_id, config, split=split)


def require_columns(record: dict, columns: Iterable[str], where: str, flag_hint: str) -> None:
    missing = [c for c in columns if c not in record]
    if missing:
        raise PrepError(f"{where}: column(s) {missing} not found (have {sorted(record)}); {flag_hint}")


def build_rows(records: Iterable[dict], build: RowBuilder, name: str, limit: int | None) -> list[dict]:
    """Apply ``build`` to each record; report (never hide) records that had no usable answer."""
    rows, skipped = [], 0
    for index, record in enumerate(records):
        if limit is not None and len(rows) >= limit:
            break
        row = build(record, index)
        if row is None:
            skipped += 1
        else:
            rows.append(row)
    if skipped:
        print(f"{name}: skipped {skipped} record(s) without a usable ground-truth answer", file=sys.stderr)
    if not rows:
        raise PrepError(f"{name}: no rows to write; check the dataset id, split and column flags.")
    return rows


def write_parquet(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    print(f"wrote {len(rows)} rows to {path}", file=sys.stderr)


def canonical_integer(answer: str) -> str:
    """'073' -> '73', '1,000' -> '1000'; anything that is not an integer is returned stripped."""
    text = str(answer).strip().replace(",", "")
    return str(int(text)) if text.lstrip("-").isdigit() else str(answer).strip()


def add_common_flags(parser) -> None:
    parser.add_argument("--out", default=None, help="output folder (default: %(default)s)")
    parser.add_argument("--from-local", metavar="FILE", help="read a jsonl file instead of the hub (offline, tests)")
    parser.add_argument("--local-split-column", default="split", help="jsonl field naming each row's output")
    parser.add_argument("--limit", type=int, default=None, help="at most this many rows per output (smoke runs)")
    parser.add_argument("--only", default=None, help="comma-separated outputs to write (default: all)")


def selected(outputs: Iterable[str], only: str | None) -> list[str]:
    outputs = list(outputs)
    if only is None:
        return outputs
    wanted = [o.strip() for o in only.split(",") if o.strip()]
    unknown = [o for o in wanted if o not in outputs]
    if unknown:
        raise PrepError(f"--only {only}: unknown output(s) {unknown}; choose from {outputs}.")
    return wanted


def source_records(name: str, local: dict[str, list[dict]] | None, local_path: str | None,
                   dataset_id: str, config: str | None, split: str) -> Iterable[dict]:
    """The records of one output: the jsonl group named ``name``, or the hub split."""
    if local is None:
        return load_hub(dataset_id, config, split)
    if name not in local:
        raise PrepError(
            f"--from-local {local_path}: no rows with split '{name}' (found {sorted(local)}); add them or pass --only."
        )
    return local[name]
