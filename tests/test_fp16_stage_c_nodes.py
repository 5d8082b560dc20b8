"""Stage C in fp16 through the loader and the GDF sampler node, in-process with the host's modules.

There is no GPU here, and on the CPU the host never computes in fp16; a GPU without bf16 (what
GTX 10xx/RTX 20xx, T4 and V100 users have) is simulated by telling the host's dtype policy that
fp16 is fast and bf16 is not. The fp16 arithmetic itself really runs, on the CPU.
"""
import pytest
import torch
from safetensors.torch import save_file

from devtools import standin_models as STANDIN
LATENT = {"samples": torch.zeros(1, 16, 6, 6)}
# |fp16 - fp32| / max |fp32| of the sampled latents; measured 2.4e-3 (plain) and 2.3e-3 (with the LoRA).
TOLERANCE = 1e-2


def write_stage_c(path, seed, film_bias_last_level=0.0, film_bias_first_level=0.0):
    """A tiny seeded Stage C file (bf16, original layout, like the released ones); the FiLM biases make
    its last group's hidden states pass fp16's 65504 (as the released model's do), or its first level's."""
    network = STANDIN.tiny_network("stage_c", seed=seed)
    with torch.no_grad():
        for blocks, bias in ((network.up_blocks[-1], film_bias_last_level), (network.down_blocks[0], film_bias_first_level)):
            for block in blocks:
                if hasattr(block, "film"):
                    block.mapper.bias[: block.mapper.out_features // 2] += bias
    save_file(STANDIN.released_layout_state_dict("stage_c", network), str(path))
    return path.name


@pytest.fixture(scope="module")
def env(host_modules, tmp_path_factory):
    import folder_paths

    from stable_cascade_pack.nodes import fp16_scales, loaders, sampling

    folder = tmp_path_factory.mktemp("fp16_models")
    folder_paths.add_model_folder_path("diffusion_models", str(folder), is_default=True)
    names = {
        "overflowing": write_stage_c(folder / "stage_c_overflowing.safetensors", 1, film_bias_last_level=2e4),
        "skip_overflows": write_stage_c(folder / "stage_c_skip_overflows.safetensors", 2, film_bias_first_level=3e4),
    }
    return dict(loaders=loaders, sampling=sampling, fp16_scales=fp16_scales, names=names, folder=folder)


@pytest.fixture
def cache(env, tmp_path, monkeypatch):
    """The factor cache in a temporary file instead of the host's user directory."""
    path = tmp_path / "fp16_block_scales.json"
    monkeypatch.setattr(env["fp16_scales"], "cache_file", lambda: str(path))
    return path


@pytest.fixture
def gpu_without_bf16(monkeypatch):
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "should_use_fp16", lambda *args, **kwargs: True)
    monkeypatch.setattr(mm, "should_use_bf16", lambda *args, **kwargs: False)


def text(seed):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 1280, generator=generator), {"pooled_output": torch.randn(1, 1280, generator=generator)}]]


def sample(env, model):
    args = dict(seed=5, steps=4, cfg=4.0, shift=2.0, cfg_rho=0.7, sampler="ddpm", eta=0.0, denoise=1.0)
    return env["sampling"].StageCSampler.execute(model, text(1), text(2), LATENT, **args).args[0]["samples"]


def load(env, which, dtype="default"):
    return env["loaders"].StageCLoader.execute(env["names"][which], dtype).args[0]


def relative_difference(ours, reference):
    return ((ours - reference).abs().max() / reference.abs().max()).item()


def test_on_a_gpu_without_bf16_stage_c_runs_in_fp16_and_matches_fp32(env, cache, gpu_without_bf16):
    reference = sample(env, load(env, "overflowing", "fp32"))
    assert torch.isfinite(reference).all()

    model = load(env, "overflowing")
    network = model.model.diffusion_model
    assert model.model.get_dtype() == torch.float16 and model.model.manual_cast_dtype is None
    assert torch.float16 in model.model.model_config.supported_inference_dtypes
    assert min(network.fp16_block_scales) < 1.0
    result = sample(env, model)
    assert torch.isfinite(result).all()
    assert relative_difference(result, reference) <= TOLERANCE

    from stable_cascade_pack.nodes.input_checks import NonFiniteResult

    scales, network.fp16_block_scales = network.fp16_block_scales, None
    try:  # plain fp16 must overflow on this file (and the sampler says so instead of returning black)
        with pytest.raises(NonFiniteResult, match="fp16 overflow"):
            sample(env, model)
    finally:
        network.fp16_block_scales = scales


def test_a_host_lora_patch_composes_with_fp16(env, cache, gpu_without_bf16):
    """The LoRA reaches the fp16 model through the host's add_patches; the rescale never touches weights."""
    import comfy.sd

    generator = torch.Generator().manual_seed(11)
    lora = {}
    for target, (rows, cols) in {"up_blocks_0_0_channelwise_4": (64, 256), "up_blocks_0_2_attention_attn_out_proj": (64, 64),
                                 "down_blocks_0_0_depthwise": (64, 9)}.items():
        down = torch.randn(4, cols, generator=generator) * 0.3
        lora[f"lora_prior_unet_{target}.lora_down.weight"] = down if "depthwise" not in target else down.view(4, 1, 3, 3)
        lora[f"lora_prior_unet_{target}.lora_up.weight"] = torch.randn(rows, 4, generator=generator) * 0.3
        lora[f"lora_prior_unet_{target}.alpha"] = torch.tensor(4.0)

    def patched(model):
        result, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0.0)
        assert len(result.patches) == 3, sorted(result.patches)
        return result

    fp32 = load(env, "overflowing", "fp32")
    fp16 = load(env, "overflowing")
    assert fp16.model.get_dtype() == torch.float16
    reference = sample(env, patched(fp32))
    assert relative_difference(reference, sample(env, fp32)) > 1e-2, "the LoRA changed nothing"
    result = sample(env, patched(fp16))
    assert torch.isfinite(result).all()
    assert relative_difference(result, reference) <= TOLERANCE


def test_factors_are_cached_per_file(env, cache, gpu_without_bf16, monkeypatch):
    first = load(env, "overflowing").model.diffusion_model.fp16_block_scales
    assert cache.exists()

    def no_calibration(network):
        raise AssertionError("calibrated again instead of reading the cache")

    monkeypatch.setattr(env["fp16_scales"], "calibrate", no_calibration)
    assert load(env, "overflowing").model.diffusion_model.fp16_block_scales == first


def test_where_rescaling_cannot_help_default_falls_back_and_fp16_says_why(env, cache, gpu_without_bf16):
    from stable_cascade_pack.stages.fp16_rescale import Fp16RescaleError

    model = load(env, "skip_overflows")
    assert torch.float16 not in model.model.model_config.supported_inference_dtypes
    assert model.model.diffusion_model.fp16_block_scales is None
    assert (model.model.manual_cast_dtype or model.model.get_dtype()) == torch.float32
    with pytest.raises(Fp16RescaleError, match="stage_c_skip_overflows.safetensors cannot run in fp16: a level output"):
        load(env, "skip_overflows", "fp16")


def test_where_bf16_or_only_the_cpu_is_there_fp16_is_not_listed(env, cache, monkeypatch):
    model = load(env, "overflowing")  # this CPU: fp32
    assert model.model.model_config.supported_inference_dtypes == [torch.bfloat16, torch.float32]
    assert model.model.diffusion_model.fp16_block_scales is None and not cache.exists()

    import comfy.model_management as mm

    monkeypatch.setattr(mm, "should_use_fp16", lambda *args, **kwargs: True)
    monkeypatch.setattr(mm, "should_use_bf16", lambda *args, **kwargs: True)
    model = load(env, "overflowing")
    assert model.model.get_dtype() == torch.bfloat16
    assert torch.float16 not in model.model.model_config.supported_inference_dtypes


def test_the_hosts_ksampler_runs_our_fp16_stage_c_too(env, cache, gpu_without_bf16):
    """The host's own sampling path (apply_model casts to fp16, passes its control/transformer_options)."""
    import comfy.sample

    def ksample(model):
        noise = torch.randn(1, 16, 6, 6, generator=torch.Generator().manual_seed(3))
        return comfy.sample.sample(model, noise, 4, 4.0, "euler", "simple", text(1), text(2), LATENT["samples"],
                                   disable_pbar=True, seed=3)

    reference = ksample(load(env, "overflowing", "fp32"))
    model = load(env, "overflowing")
    assert model.model.get_dtype() == torch.float16
    result = ksample(model)
    assert torch.isfinite(result).all()
    assert relative_difference(result, reference) <= TOLERANCE
    network = model.model.diffusion_model
    scales, network.fp16_block_scales = network.fp16_block_scales, None
    try:
        assert not torch.isfinite(ksample(model)).all(), "plain fp16 must overflow here too"
    finally:
        network.fp16_block_scales = scales


def test_the_packs_lora_loader_composes_with_fp16(env, cache, gpu_without_bf16, tmp_path):
    """The pack's own LoRA node (nodes/lora.py: host add_patches under the hood) on the fp16 model."""
    import folder_paths

    from stable_cascade_pack.nodes import lora as lora_nodes

    fp32 = load(env, "overflowing", "fp32")
    generator = torch.Generator().manual_seed(12)
    tensors = {}
    for key, weight in fp32.model.diffusion_model.state_dict().items():
        if key.endswith(".weight") and weight.dim() == 2 and key.startswith(("up_blocks.1.", "down_blocks.0.")):
            name = "lora_prior_unet_" + key.removesuffix(".weight").replace(".", "_")
            tensors[f"{name}.lora_up.weight"] = torch.randn(weight.shape[0], 2, generator=generator) * 0.2
            tensors[f"{name}.lora_down.weight"] = torch.randn(2, weight.shape[1], generator=generator) * 0.2
            tensors[f"{name}.alpha"] = torch.tensor(2.0)
    save_file(tensors, str(tmp_path / "fp16_style.safetensors"))
    folder_paths.add_model_folder_path("loras", str(tmp_path), is_default=True)

    def with_lora(model):
        return lora_nodes.StageCLoraLoader.execute(model, "fp16_style.safetensors", 1.0, None, 1.0, "").args[0]

    fp16 = load(env, "overflowing")
    assert fp16.model.get_dtype() == torch.float16
    reference = sample(env, with_lora(fp32))
    assert relative_difference(reference, sample(env, fp32)) > 1e-2, "the LoRA changed nothing"
    result = sample(env, with_lora(fp16))
    assert torch.isfinite(result).all()
    assert relative_difference(result, reference) <= TOLERANCE


def test_the_packs_controlnet_composes_with_fp16(env, cache, gpu_without_bf16, tmp_path):
    """The pack's ControlNet nodes on the fp16 model: its residuals join the rescaled stream at the
    block's scale, so the controlled fp16 result stays as close to fp32's as the plain one."""
    import folder_paths

    from devtools import standin_controlnets
    from stable_cascade_pack.nodes import controlnet

    standin_controlnets.write_standin_controlnet(tmp_path / "canny_fp16_test.safetensors", "canny", seed=3)
    folder_paths.add_model_folder_path("controlnet", str(tmp_path), is_default=True)
    canny = controlnet.ControlNetLoader.execute("canny_fp16_test.safetensors").args[0]
    hint = torch.rand(1, 96, 96, 3, generator=torch.Generator().manual_seed(4))
    positive, negative = controlnet.ControlNetApply.execute(text(1), text(2), canny, hint, 1.0, 0.0, 1.0,
                                                            mask=None, stage_c_vae=None).args[:2]

    def sample_controlled(model):
        args = dict(seed=5, steps=4, cfg=4.0, shift=2.0, cfg_rho=0.7, sampler="ddpm", eta=0.0, denoise=1.0)
        return env["sampling"].StageCSampler.execute(model, positive, negative, LATENT, **args).args[0]["samples"]

    fp32 = load(env, "overflowing", "fp32")
    reference = sample_controlled(fp32)
    assert relative_difference(reference, sample(env, fp32)) > 1e-4, "the ControlNet changed nothing"
    fp16 = load(env, "overflowing")
    assert fp16.model.get_dtype() == torch.float16
    result = sample_controlled(fp16)
    assert torch.isfinite(result).all()
    assert relative_difference(result, reference) <= TOLERANCE
