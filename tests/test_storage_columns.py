"""StorageColumns (fspo_verl.agent_loop.storage_columns): the trajectory write's fields without verl's TensorDict.

- by hand: which rows are stacked, nested or kept as a list, and their shapes;
- limiting case against verl: the same trajectories, built by our postprocess, written once with verl's
  ``list_of_dict_to_tensordict`` and once as StorageColumns into a real TransferQueue (SimpleStorage, two
  storage units, as ``cluster=cpu`` runs it), read back field by field: same names, types, values, dtypes
  and per-row element types, and the same field schema and tags in the controller;
- the worker picks StorageColumns only for SimpleStorage.
"""

from __future__ import annotations

import tempfile
import uuid

import pytest
import ray
import torch
from omegaconf import OmegaConf

from fspo_verl.agent_loop.manager import trajectory_records
from fspo_verl.agent_loop.storage_columns import StorageColumns, storage_columns_apply


def test_columns_by_hand() -> None:
    rows = [
        {"responses": torch.tensor([5, 6, 7]), "score": torch.tensor([1.0]), "uid": "a", "info": {"i": 0}},
        {"responses": torch.tensor([8]), "score": torch.tensor([2.0]), "uid": "b", "info": None},
    ]
    columns = StorageColumns(rows)
    assert columns.batch_size == torch.Size([2])
    assert sorted(columns) == ["info", "responses", "score", "uid"]
    assert torch.equal(columns["score"], torch.tensor([[1.0], [2.0]]))  # one shape: stacked, (B, 1)
    ragged = columns["responses"]
    assert ragged.is_nested and ragged.layout == torch.strided  # ragged: nested, its unbind is one C++ call
    assert [t.tolist() for t in ragged.unbind()] == [[5, 6, 7], [8]]
    assert columns["uid"] == ["a", "b"] and columns["info"] == [{"i": 0}, None]  # non-tensors: the row objects
    mixed = StorageColumns([{"x": torch.tensor([1])}, {"x": 3}])  # a tensor and an int: not a tensor column
    assert mixed["x"][1] == 3 and isinstance(mixed["x"], list)
    with pytest.raises(ValueError, match="at least one row"):
        StorageColumns([])


def test_only_simple_storage_gets_the_columns() -> None:
    assert storage_columns_apply(OmegaConf.create({}))  # verl's default backend
    assert storage_columns_apply(OmegaConf.create({"transfer_queue": {"backend": {"storage_backend": "SimpleStorage"}}}))
    assert not storage_columns_apply(OmegaConf.create({"transfer_queue": {"backend": {"storage_backend": "MooncakeStore"}}}))


@pytest.fixture(scope="module")
def transfer_queue():
    import transfer_queue as tq

    assert not ray.is_initialized()
    temp_dir = tempfile.mkdtemp(prefix="fspo_cols_", dir="/tmp")
    ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    tq.init({"backend": {"SimpleStorage": {"num_data_storage_units": 2}}})
    yield tq
    tq.close()
    ray.shutdown()


def _trajectories(lengths: list[tuple[int, int]]):
    """(keys, field dicts, tags) of one-output trajectories as our postprocess builds them for TransferQueue,
    with the non-tensor columns of a demo row (str, int, dict, list of dicts, empty dict, None)."""
    from test_cpu_agent_loop import _bare_worker, _outputs

    worker = _bare_worker()
    keys, fields, tags = [], [], []
    for i, output in enumerate(_outputs(lengths)):
        kwargs = {"uid": f"p{i // 2}", "session_id": i % 2, "global_steps": 3, "data_source": "fspo_countdown",
                  "prompt": [{"role": "user", "content": f"q{i}"}], "ability": "counting",
                  "reward_model": {"style": "rule", "ground_truth": "c b a"},
                  "extra_info": {"split": "train", "index": i}, "raw_prompt": [{"role": "user", "content": f"q{i}"}],
                  "index": i, "tools_kwargs": {}, "interaction_kwargs": {}, "mm_processor_output": None}
        k, f, t, _ = trajectory_records(worker, [output], False, kwargs)
        keys += k
        fields += f
        tags += t
    return keys, fields, tags


@pytest.mark.parametrize("lengths", [
    [(1, 4), (1, 1), (2, 7), (1, 3), (3, 16), (1, 2)],  # ragged prompts and responses
    [(2, 5)] * 4,  # every row one shape: stacked columns
    [(1, 9)],  # one row
])
def test_a_write_as_columns_stores_what_verls_tensordict_stores(transfer_queue, lengths) -> None:
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    tq = transfer_queue
    partition = f"train-{uuid.uuid4().hex[:8]}"
    keys, fields, tags = _trajectories(lengths)
    ours_keys, theirs_keys = [f"ours-{k}" for k in keys], [f"verl-{k}" for k in keys]
    tq.kv_batch_put(keys=theirs_keys, partition_id=partition, fields=list_of_dict_to_tensordict(fields), tags=tags)
    tq.kv_batch_put(keys=ours_keys, partition_id=partition, fields=StorageColumns(fields), tags=tags)
    try:
        theirs = tq.kv_batch_get(keys=theirs_keys, partition_id=partition)
        ours = tq.kv_batch_get(keys=ours_keys, partition_id=partition)
        assert sorted(ours.keys()) == sorted(theirs.keys()) == sorted(fields[0])
        for name in theirs.keys():
            a, b = ours[name], theirs[name]
            assert type(a) is type(b), name
            if isinstance(b, torch.Tensor):
                assert a.is_nested == b.is_nested and a.dtype == b.dtype, name
                rows_a, rows_b = (a.unbind(), b.unbind()) if b.is_nested else (a, b)
                assert len(rows_a) == len(rows_b) == len(keys)
                assert all(torch.equal(x, y) for x, y in zip(rows_a, rows_b)), name
            else:
                assert list(a) == list(b), name
                assert [type(v) for v in a] == [type(v) for v in b], name
        client = tq.get_client()  # the controller's field schema: tensor or not, nested or not, dtype, shapes
        schema_ours = client.kv_retrieve_meta(keys=ours_keys, partition_id=partition).field_schema
        schema_theirs = client.kv_retrieve_meta(keys=theirs_keys, partition_id=partition).field_schema
        assert schema_ours == schema_theirs
        listed = tq.kv_list(partition_id=partition)[partition]
        assert [listed[k] for k in ours_keys] == [listed[k] for k in theirs_keys] == tags
        lens = [len(r) for r in ours["responses"].unbind()] if ours["responses"].is_nested else [ours["responses"].shape[1]] * len(keys)
        assert lens == [r for _, r in lengths]  # by hand: each row's own response length
    finally:
        tq.kv_clear(keys=ours_keys + theirs_keys, partition_id=partition)
