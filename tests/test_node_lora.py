"""The LoRA nodes in-process with the host's modules: files in models/loras, our GDF sampler and the
host's KSampler on the patched MODEL, and the base MODEL giving bit-exactly its earlier result after."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from devtools import standin_models as STANDIN

POSITIVE = [[torch.randn(1, 77, 1280, generator=torch.Generator().manual_seed(1)),
             {"pooled_output": torch.randn(1, 1280, generator=torch.Generator().manual_seed(2))}]]
NEGATIVE = [[torch.zeros(1, 77, 1280), {"pooled_output": torch.zeros(1, 1280)}]]
ATTENTION_MODULES = ("to_q", "to_k", "to_v", "out_proj")


@pytest.fixture(scope="module")
def env(host_modules, tmp_path_factory):
    import folder_paths

    models = tmp_path_factory.mktemp("models")
    paths = STANDIN.write_standin_models(models, roles=("stage_c",))
    folder_paths.add_model_folder_path("diffusion_models", str(models / "diffusion_models"), is_default=True)
    loras = models / "loras"
    loras.mkdir()
    folder_paths.add_model_folder_path("loras", str(loras), is_default=True)
    from stable_cascade_pack.nodes import latents, loaders, lora, sampling

    model = loaders.StageCLoader.execute(paths["stage_c"].name, "fp32").args[0]
    generator = torch.Generator().manual_seed(5)
    tensors = {}
    for key, weight in model.model.diffusion_model.state_dict().items():
        if key.endswith(".weight") and key.split(".")[-2] in ATTENTION_MODULES:
            name = "lora_prior_unet_" + key.removesuffix(".weight").replace(".", "_")
            tensors[f"{name}.lora_up.weight"] = torch.randn(weight.shape[0], 2, generator=generator)
            tensors[f"{name}.lora_down.weight"] = torch.randn(2, weight.shape[1], generator=generator)
            tensors[f"{name}.alpha"] = torch.tensor(2.0)
    save_file(tensors, str(loras / "style.safetensors"))
    return dict(model=model, loras=loras, latents=latents, lora=lora, sampling=sampling)


def gdf(env, model):
    latent = {"samples": torch.zeros(1, 16, 6, 6)}
    return env["sampling"].StageCSampler.execute(model, POSITIVE, NEGATIVE, latent, seed=3, steps=2, cfg=4.0, shift=2.0,
                                                 cfg_rho=0.7, sampler="ddpm", eta=0.0, denoise=1.0).args[0]["samples"]


def ksampler(model):
    import nodes as host_nodes

    latent = {"samples": torch.zeros(1, 16, 6, 6)}
    return host_nodes.common_ksampler(model, 3, 2, 4.0, "euler", "simple", POSITIVE, NEGATIVE, latent)[0]["samples"]


@pytest.mark.parametrize("sampler", [gdf, ksampler], ids=["gdf", "ksampler"])
def test_lora_changes_the_result_and_leaves_the_base_model_exactly_as_it_was(env, sampler):
    run = (lambda m: gdf(env, m)) if sampler is gdf else ksampler
    base_model = env["model"]
    before = run(base_model)
    patched, clip, info = env["lora"].StageCLoraLoader.execute(base_model, "style.safetensors", 1.0, None, 1.0, "").args
    assert "ComfyUI (lora_prior_unet_) LoRA for a custom Stage C" in info and clip is None
    with_lora = run(patched)
    after = run(base_model)
    assert torch.isfinite(with_lora).all()
    assert not torch.allclose(with_lora, before, atol=1e-3)
    assert torch.equal(after, before)
    zero, _, _ = env["lora"].StageCLoraLoader.execute(base_model, "style.safetensors", 0.0, None, 1.0, "").args
    assert torch.equal(run(zero), before)


def test_convert_node_writes_both_layouts_that_load_back_alike(env):
    from stable_cascade_pack.lora import read_lora
    from stable_cascade_pack.nodes.lora_patches import stage_c_shapes

    model, node = env["model"], env["lora"].SaveStageCLora
    shapes = stage_c_shapes(model)
    source = read_lora(load_file(str(env["loras"] / "style.safetensors")), shapes)
    for fmt in ("original", "comfyui"):
        path = node.execute(model, "style.safetensors", fmt, f"style_{fmt}").args[0]
        converted = read_lora(load_file(path), shapes)
        assert converted.format == fmt
        for key, low_rank in source.unet.items():
            torch.testing.assert_close(converted.unet[key].delta(shapes[key]), low_rank.delta(shapes[key]), rtol=1e-5, atol=1e-6)
    assert "plain file name" in node.validate_inputs("style.safetensors", "comfyui", "../escape")
    with pytest.raises(ValueError, match="already exists"):
        node.execute(model, "style.safetensors", "comfyui", "style_comfyui")


def test_loader_refuses_a_stage_b_model_and_a_wrong_file(env):
    from stable_cascade_pack.lora import LoraError

    node = env["lora"].StageCLoraLoader
    save_file({"weights.0.lora_down": torch.zeros(1, 7), "weights.0.lora_up": torch.zeros(7, 1)}, str(env["loras"] / "other.safetensors"))
    with pytest.raises(LoraError, match="other.safetensors is an original-format LoRA for a custom Stage C .* but the model is"):
        node.execute(env["model"], "other.safetensors", 1.0, None, 1.0, "")
    assert "not one of the choices" in node.validate_inputs("missing.safetensors")
    with pytest.raises(ValueError, match="'model' is not a Stable Cascade model"):
        node.execute(object(), "style.safetensors", 1.0, None, 1.0, "")


def test_loader_refuses_strengths_that_are_not_numbers(env):
    """A NaN strength would patch every weight to NaN and sample a 'successful' black picture."""
    node = env["lora"].StageCLoraLoader
    with pytest.raises(ValueError, match=r"Load Stage C LoRA \(Stable Cascade\): 'strength_model' is nan"):
        node.execute(env["model"], "style.safetensors", float("nan"), None, 1.0, "")
    with pytest.raises(ValueError, match="'strength_clip' is inf"):
        node.execute(env["model"], "style.safetensors", 1.0, None, float("inf"), "")
