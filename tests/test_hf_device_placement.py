"""The hf rollout off the CPU, tested without a GPU: which device and dtype the server chooses for each platform
name verl can report, that the server honours that choice (model, sampler), and the weight path that keeps
device tensors on the device (a meta tensor stands in for a GPU one: copying it to the host raises)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from fspo_verl.demo.model import build_model, build_tokenizer, save_model
from fspo_verl.rollout_hf import server as hf_server
from fspo_verl.rollout_hf.generation import SamplingSpec, generate_batch
from fspo_verl.rollout_hf.replica import server_runtime_env
from fspo_verl.rollout_hf.server import (
    SharedDeviceTensor,
    rollout_dtype,
    server_placement,
    wire_nbytes,
    wire_tensor,
)


@pytest.mark.parametrize(
    ("dtype", "device_name", "expected"),
    [
        ("bfloat16", "cuda", (torch.device("cuda", 0), torch.bfloat16)),  # verl's default rollout.dtype on a GPU
        ("bf16", "cuda", (torch.device("cuda", 0), torch.bfloat16)),
        ("float16", "hpu", (torch.device("hpu", 0), torch.float16)),
        ("fp32", "cuda", (torch.device("cuda", 0), torch.float32)),
        (torch.bfloat16, "xpu", (torch.device("xpu", 0), torch.bfloat16)),
        ("bfloat16", "cpu", (torch.device("cpu"), torch.float32)),  # cpu platform: always fp32, whatever the key says
        ("float16", "cpu", (torch.device("cpu"), torch.float32)),
    ],
)
def test_device_and_dtype_follow_the_platform_and_rollout_dtype(dtype, device_name, expected):
    assert server_placement(dtype, device_name) == expected


def test_the_platform_comes_from_verl_by_default():
    from verl.utils.device import get_device_name

    assert server_placement("bfloat16")[0].type == get_device_name()


def test_a_bad_rollout_dtype_names_the_key():
    with pytest.raises(ValueError, match=r"actor_rollout_ref.rollout.dtype='int8' is not a dtype.*bfloat16"):
        rollout_dtype("int8")
    with pytest.raises(ValueError, match="rollout.dtype"):
        server_placement("int8", "cuda")


def write_model(out_dir, seed: int = 0) -> str:
    """Save the tokenizer and the randomly initialised demo model under ``out_dir``."""
    tokenizer = build_tokenizer()
    return save_model(build_model(tokenizer, seed), tokenizer, out_dir)


def _server(tmp_path, monkeypatch, placement):
    from verl.workers.config import HFModelConfig, RolloutConfig

    path = write_model(tmp_path / "model")
    monkeypatch.setattr(hf_server, "server_placement", lambda dtype, device_name=None: placement)
    return hf_server.HFRolloutServer(
        RolloutConfig(name="hf", prompt_length=8, response_length=6), HFModelConfig(path=path), replica_rank=0
    )


def test_the_server_loads_its_model_and_sampler_where_the_placement_says(tmp_path, monkeypatch):
    server = _server(tmp_path, monkeypatch, (torch.device("cpu"), torch.bfloat16))
    assert {p.dtype for p in server.model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in server.model.parameters()} == {"cpu"}
    assert server._generator.device == torch.device("cpu")
    assert (server.device, server.dtype) == (torch.device("cpu"), torch.bfloat16)


def test_a_cpu_platform_server_is_fp32_with_one_thread(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    try:
        server = _server(tmp_path, monkeypatch, server_placement("bfloat16", "cpu"))
        assert {p.dtype for p in server.model.parameters()} == {torch.float32}
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_bf16_model_generates_with_float_log_probs():
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=0).to(torch.bfloat16).eval()
    out = generate_batch(model, [[3, 4, 5], [6, 7]], [4, 3], SamplingSpec(temperature=1.0), {tokenizer.eos_token_id},
                         tokenizer.pad_token_id, torch.Generator().manual_seed(0))  # fmt: skip
    assert [len(ids) for ids, _ in out] == [len(lp) for _, lp in out]
    assert all(lp <= 0.0 for _, lps in out for lp in lps) and 1 <= len(out[1][0]) <= 3


def test_a_host_tensor_is_sent_as_a_private_host_copy():
    weight = torch.arange(6.0).reshape(2, 3)
    sent = wire_tensor(weight)
    weight += 1  # the actor's parameter moves on; the bucket must not
    assert isinstance(sent, torch.Tensor) and sent.device.type == "cpu"
    assert sent.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert wire_nbytes(sent) == 24


def test_a_device_tensor_stays_on_its_device_and_travels_by_handle():
    """meta stands in for cuda: ``.to("cpu")`` of a meta tensor raises, so passing proves no host copy was made."""
    shared = []

    def share(tensor):
        shared.append(tensor)
        return SharedDeviceTensor(lambda: tensor, (), tuple(tensor.shape), tensor.numel() * tensor.element_size())

    weight = torch.empty(4, 8, device="meta", dtype=torch.bfloat16)
    sent = wire_tensor(weight, ipc_device_types={"meta"}, share=share)
    assert isinstance(sent, SharedDeviceTensor) and wire_nbytes(sent) == 64
    assert shared[0].device.type == "meta" and shared[0] is not weight  # a device-side clone
    with pytest.raises(NotImplementedError):
        wire_tensor(weight)  # meta is not an IPC device by default: the host path, which cannot copy it


def test_the_server_writes_shared_and_host_tensors_into_its_parameters(tmp_path, monkeypatch):
    server = _server(tmp_path, monkeypatch, (torch.device("cpu"), torch.bfloat16))
    names = list(server._params)
    new = {name: torch.full_like(p, 0.5, dtype=torch.float32) for name, p in server._params.items()}
    half = len(names) // 2
    bucket = [(n, SharedDeviceTensor(lambda t=new[n]: t, (), tuple(new[n].shape), 0)) for n in names[:half]]
    bucket += [(n, new[n]) for n in names[half:]]
    assert asyncio.run(server.receive_weights(bucket)) == len(names)
    server.commit_weights(7)
    assert server.global_steps == 7
    assert all(p.dtype == torch.bfloat16 and bool((p == 0.5).all()) for p in server._params.values())


def test_the_replica_places_a_gpu_server_as_verl_places_vllms(monkeypatch):
    import verl.plugin.platform as platforms
    from verl.plugin.platform.platform_cuda import PlatformCUDA

    monkeypatch.setattr(platforms, "get_platform", lambda: PlatformCUDA())  # whatever this process selected
    assert server_runtime_env("cpu", [["0"]]) == {}
    env_vars = server_runtime_env("cuda", [["3"], ["5"]])["env_vars"]
    assert env_vars["CUDA_VISIBLE_DEVICES"] == "3,5"  # the first worker's device becomes the server's cuda:0
    assert env_vars["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"] == "1"  # Ray leaves it as given
