"""Our networks reproduce the golden forward passes computed with the original code (fixtures README §3)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from stable_cascade_pack.stages.checkpoint.layouts import convert_state_dict
from stable_cascade_pack.stages.previewer import Previewer
from stable_cascade_pack.stages.stage_a import StageA
from stable_cascade_pack.stages.stage_b import StageB
from stable_cascade_pack.stages.stage_c import StageC

CLASSES = {"stage_c": StageC, "stage_b": StageB, "previewer": Previewer, "stage_a": StageA}


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def load_fixture(fixtures_dir, name):
    forward = fixtures_dir / "forward"
    config = json.loads((forward / f"{name}.json").read_text())
    model = CLASSES[name](**config["constructor_kwargs"])
    original = load_file(forward / f"{name}.state_dict.safetensors")
    model.load_state_dict(convert_state_dict(original, "original", "pack"), strict=True)
    return model.eval(), load_file(forward / f"{name}.io.safetensors")


@pytest.fixture(scope="module")
def stage_c(fixtures_dir):
    return load_fixture(fixtures_dir, "stage_c")


@torch.no_grad()
def test_stage_c_output(stage_c):
    model, io = stage_c
    assert_close(model(io["x"], io["r"], io["clip_text"], io["clip_text_pooled"], io["clip_img"]), io["out"])


@torch.no_grad()
def test_stage_c_output_with_sca_crp(stage_c):
    model, io = stage_c
    out = model(io["x"], io["r"], io["clip_text"], io["clip_text_pooled"], io["clip_img"], sca=io["sca"], crp=io["crp"])
    assert_close(out, io["out_sca_crp"])
    zero_as_number = model(io["x"], io["r"], io["clip_text"], io["clip_text_pooled"], io["clip_img"], sca=0.0, crp=0)
    assert_close(zero_as_number, io["out"])


@torch.no_grad()
def test_stage_c_condition_tokens(stage_c):
    model, io = stage_c
    assert_close(model.gen_c_embeddings(io["clip_text"], io["clip_text_pooled"], io["clip_img"]), io["clip_embeddings"])


@torch.no_grad()
def test_stage_c_noise_level_embedding(stage_c):
    model, io = stage_c
    assert_close(model.noise_level_embeddings(io["r"], {}), io["r_embedding"])
    zeros = torch.zeros_like(io["r"])
    manual = torch.cat([model.gen_r_embedding(io["r"]), model.gen_r_embedding(zeros), model.gen_r_embedding(zeros)], 1)
    assert_close(manual, io["r_embedding"])


def test_r_embedding_test_vector():
    from stable_cascade_pack.stages.blocks import noise_level_embedding

    embedding = noise_level_embedding(torch.tensor([0.5]), 64)
    expected_head = torch.tensor([-0.98797, 0.99357, 0.99612, 0.78116])
    expected_cos = torch.tensor([0.15467, 0.11325, -0.08803, -0.62433])
    torch.testing.assert_close(embedding[0, :4], expected_head, atol=2e-5, rtol=0)
    torch.testing.assert_close(embedding[0, 32:36], expected_cos, atol=2e-5, rtol=0)


@torch.no_grad()
def test_stage_c_with_controlnet_list(stage_c, fixtures_dir):
    model, io = stage_c
    cnet_io = load_file(fixtures_dir / "forward" / "controlnet.io.safetensors")
    cnet_meta = json.loads((fixtures_dir / "forward" / "controlnet.json").read_text())
    batch = cnet_io["control"].shape[0]
    # the original's list: one entry per block up to the last projected one, None where none projects
    projected = cnet_meta["constructor_kwargs"]["proj_blocks"]
    cnet = [cnet_io[f"cnet.{i}"] if i in projected else None for i in range(max(projected) + 1)]
    inputs = [io[k][:batch] for k in ("x", "r", "clip_text", "clip_text_pooled", "clip_img")]
    out = model(*inputs, cnet=cnet)
    assert_close(out, cnet_io["stage_c_out_with_cnet"])
    # the host convention: the same residuals, consumed from the end of control["input"]
    out_host_style = model(*inputs, control={"input": cnet[::-1]})
    assert_close(out_host_style, cnet_io["stage_c_out_with_cnet"])
    # the residuals really change the output
    assert (out - model(*inputs)).abs().max() > 1e-3


@torch.no_grad()
def test_stage_b_outputs(fixtures_dir):
    model, io = load_fixture(fixtures_dir, "stage_b")
    assert_close(model(io["x"], io["r"], io["effnet"], io["clip"]), io["out"])
    assert_close(model(io["x"], io["r"], io["effnet"], io["clip"], pixels=io["pixels"]), io["out_pixels"])


@torch.no_grad()
def test_previewer_output(fixtures_dir):
    model, io = load_fixture(fixtures_dir, "previewer")
    assert_close(model(io["x"]), io["out"])


@torch.no_grad()
def test_stage_a_encode_decode_roundtrip(fixtures_dir):
    model, io = load_fixture(fixtures_dir, "stage_a")
    assert_close(model.encode(io["img"]), io["encoded"])
    assert_close(model.decode(io["latent"]), io["decoded"])
    assert_close(model.decode(model.encode(io["img"])), io["roundtrip"])


@torch.no_grad()
def test_stage_a_quantize_picks_nearest_codebook_entry(fixtures_dir):
    model, io = load_fixture(fixtures_dir, "stage_a")
    continuous = model.encode(io["img"]) * model.scale_factor
    quantized = model.encode(io["img"], quantize=True) * model.scale_factor
    codebook = model.vquantizer.codebook.weight
    vectors = continuous.movedim(1, -1).reshape(-1, codebook.shape[1])
    nearest = codebook[torch.cdist(vectors, codebook).argmin(1)]
    assert_close(quantized.movedim(1, -1).reshape(-1, codebook.shape[1]), nearest)
