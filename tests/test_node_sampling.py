"""The pack's loader, latent and sampler nodes in-process with the host's own modules.

The host's UNETLoader only knows the released sizes, so the "host-built MODEL" here is made the way
it makes one (its supported_models config + model_base class + its own StageC/StageB module) from
the same tiny stand-in weights; our sampler must accept it and give the same numbers as on ours.
"""
import pytest
import torch

from devtools import standin_models as STANDIN


@pytest.fixture(scope="module")
def nodes(host_modules, tmp_path_factory):
    import folder_paths

    models = tmp_path_factory.mktemp("models")
    paths = STANDIN.write_standin_models(models)
    for folder in ("diffusion_models", "vae"):
        folder_paths.add_model_folder_path(folder, str(models / folder), is_default=True)
    from stable_cascade_pack.nodes import latents, loaders, sampling

    return {"latents": latents, "loaders": loaders, "sampling": sampling, "paths": paths}


def host_built_model(stage, path):
    """A MODEL as the host builds one: its config class, its model class, its network."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import comfy.utils

    from stable_cascade_pack.stages.checkpoint import extract

    config_class = {"c": comfy.supported_models.Stable_Cascade_C, "b": comfy.supported_models.Stable_Cascade_B}[stage]
    state_dict, config = extract(comfy.utils.load_torch_file(str(path)), want=f"stage_{stage}")
    config = {k: v for k, v in config.items() if k not in ("dropout",)}
    model_config = config_class({**config, "stable_cascade_stage": stage})
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    model.diffusion_model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def text_conditioning(seed, tokens=77):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, 1280, generator=generator), {"pooled_output": torch.randn(1, 1280, generator=generator)}]]


POSITIVE, NEGATIVE = text_conditioning(1), text_conditioning(2)
SAMPLER_ARGS = dict(seed=5, cfg_rho=0.7, sampler="ddpm", eta=0.0, denoise=1.0)


def stage_c(nodes, model, latent, **overrides):
    args = {**SAMPLER_ARGS, "steps": 3, "cfg": 4.0, "shift": 2.0, **overrides}
    return nodes["sampling"].StageCSampler.execute(model, POSITIVE, NEGATIVE, latent, **args).args[0]["samples"]


def stage_b(nodes, model, prior, latent, **overrides):
    args = {**SAMPLER_ARGS, "steps": 2, "cfg": 1.1, "shift": 1.0, **overrides}
    return nodes["sampling"].StageBSampler.execute(model, POSITIVE, NEGATIVE, {"samples": prior}, latent, **args).args[0]["samples"]


def test_empty_latent_sizes(nodes):
    empty = nodes["latents"].EmptyLatent
    c, b = empty.execute(1024, 1024, 2).args
    assert tuple(c["samples"].shape) == (2, 16, 24, 24) and tuple(b["samples"].shape) == (2, 4, 256, 256)
    c, b = empty.execute(1536, 640, 1).args  # any aspect ratio: ceil(640 / 42.67) = 15, ceil(1536 / 42.67) = 36
    assert tuple(c["samples"].shape) == (1, 16, 15, 36) and tuple(b["samples"].shape) == (1, 4, 160, 384)


def test_empty_latent_refuses_sizes_the_models_cannot_take(nodes):
    validate = nodes["latents"].EmptyLatent.validate_inputs
    assert validate(1024, 768) is True
    assert "nearest sizes that work: 1000 or 1008" in validate(1001, 1024)
    assert "height 100 is below" in validate(1024, 100)


def test_our_sampler_gives_the_same_latents_on_our_model_and_a_host_built_one(nodes):
    loaders, paths = nodes["loaders"], nodes["paths"]
    ours_c = loaders.StageCLoader.execute(paths["stage_c"].name, "fp32").args[0]
    host_c = host_built_model("c", paths["stage_c"])
    empty_c, empty_b = nodes["latents"].EmptyLatent.execute(256, 384, 2).args

    ours = stage_c(nodes, ours_c, empty_c)
    host = stage_c(nodes, host_c, empty_c)
    assert ours.shape == (2, 16, 9, 6) and torch.isfinite(ours).all()
    torch.testing.assert_close(ours, host, atol=1e-4 * max(1.0, host.abs().max().item()), rtol=1e-4)

    ours_b = loaders.StageBLoader.execute(paths["stage_b"].name, "fp32").args[0]
    host_b = host_built_model("b", paths["stage_b"])
    ours = stage_b(nodes, ours_b, host, empty_b)
    host = stage_b(nodes, host_b, host, empty_b)
    assert ours.shape == (2, 4, 96, 64) and torch.isfinite(ours).all()
    torch.testing.assert_close(ours, host, atol=1e-4 * max(1.0, host.abs().max().item()), rtol=1e-4)


def test_the_stage_c_sampler_equals_the_gdf_loop_on_the_bare_network(nodes):
    """The node adds nothing of its own to the original sampler: same seed, same numbers."""
    from stable_cascade_pack.samplers.gdf import sample

    model = nodes["loaders"].StageCLoader.execute(nodes["paths"]["stage_c"].name, "fp32").args[0]
    latent = {"samples": torch.zeros(1, 16, 6, 6)}
    via_node = stage_c(nodes, model, latent, sampler="ddim", eta=0.0)
    network = model.model.diffusion_model
    cond = {"clip_text": POSITIVE[0][0], "clip_text_pooled": POSITIVE[0][1]["pooled_output"][:, None], "clip_img": torch.zeros(1, 1, 768)}
    uncond = {"clip_text": NEGATIVE[0][0], "clip_text_pooled": NEGATIVE[0][1]["pooled_output"][:, None], "clip_img": torch.zeros(1, 1, 768)}
    with torch.no_grad():
        direct = sample(network, shape=(1, 16, 6, 6), conditions=cond, unconditional=uncond, steps=3, cfg=4.0, cfg_rho=0.7,
                        shift=2.0, sampler="ddim", eta=0.0, generator=torch.Generator().manual_seed(SAMPLER_ARGS["seed"]))
    torch.testing.assert_close(via_node, direct)


def test_denoise_starts_from_the_noised_input(nodes):
    """denoise < 1 is the original image-to-image: the latent is noised to t_start (with shift 1) and
    sampled from there; the clean latent shows through, a different one gives a different result."""
    model = nodes["loaders"].StageCLoader.execute(nodes["paths"]["stage_c"].name, "fp32").args[0]
    clean = torch.randn(1, 16, 6, 6, generator=torch.Generator().manual_seed(3))
    from_clean = stage_c(nodes, model, {"samples": clean}, denoise=0.5)
    from_other = stage_c(nodes, model, {"samples": clean + 1.0}, denoise=0.5)
    from_noise = stage_c(nodes, model, {"samples": clean}, denoise=1.0)
    assert not torch.allclose(from_clean, from_other)
    assert not torch.allclose(from_clean, from_noise)
    assert torch.equal(stage_c(nodes, model, {"samples": clean}, denoise=0.0), clean)


def test_the_samplers_refuse_the_wrong_model_and_foreign_conditioning(nodes):
    loaders, paths = nodes["loaders"], nodes["paths"]
    model_b = loaders.StageBLoader.execute(paths["stage_b"].name, "default").args[0]
    with pytest.raises(ValueError, match="Stage C Prior Sampler.*'model' got a Stage B model, but it needs a Stage C model.*Load Stage C"):
        stage_c(nodes, model_b, {"samples": torch.zeros(1, 16, 6, 6)})
    model_c = loaders.StageCLoader.execute(paths["stage_c"].name, "default").args[0]
    sdxl_like = [[torch.randn(1, 77, 2048), {"pooled_output": torch.randn(1, 1280)}]]
    with pytest.raises(ValueError, match="2048-wide text embeddings but Stage C needs 1280-wide ones"):
        nodes["sampling"].StageCSampler.execute(model_c, sdxl_like, NEGATIVE, {"samples": torch.zeros(1, 16, 6, 6)},
                                                **{**SAMPLER_ARGS, "steps": 1, "cfg": 4.0, "shift": 2.0})
    no_pooled = [[torch.randn(1, 77, 1280), {}]]
    with pytest.raises(ValueError, match="no pooled text embedding"):
        nodes["sampling"].StageCSampler.execute(model_c, no_pooled, NEGATIVE, {"samples": torch.zeros(1, 16, 6, 6)},
                                                **{**SAMPLER_ARGS, "steps": 1, "cfg": 4.0, "shift": 2.0})


def test_loaders_refuse_the_wrong_file_before_reading_weights(nodes):
    from stable_cascade_pack.stages.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="stage_b_bf16.safetensors is a Stage B"):
        nodes["loaders"].StageCLoader.execute(nodes["paths"]["stage_b"].name, "default")
    with pytest.raises(CheckpointError, match="Load Stage A"):
        nodes["loaders"].StageCCoderLoader.execute("none", nodes["paths"]["stage_a"].name)


def test_loader_dtypes_follow_the_choice_and_stage_c_never_computes_in_plain_fp16(nodes):
    """Stage C computes in fp16 only rescaled (tests/test_fp16_stage_c_nodes.py); this CPU computes in fp32."""
    loaders, paths = nodes["loaders"], nodes["paths"]
    model = loaders.StageCLoader.execute(paths["stage_c"].name, "bf16").args[0]
    assert model.model.get_dtype() == torch.bfloat16
    assert model.model.manual_cast_dtype in (None, torch.float32, torch.bfloat16)
    model = loaders.StageCLoader.execute(paths["stage_c"].name, "fp16").args[0]
    assert model.model.get_dtype() == torch.float16 and model.model.manual_cast_dtype == torch.float32
    assert model.model.diffusion_model.fp16_block_scales is None
    latent = stage_c(nodes, model, {"samples": torch.zeros(1, 16, 6, 6)})
    assert latent.dtype == torch.float32 and torch.isfinite(latent).all()


def test_loaders_take_networks_out_of_comfyui_bundled_checkpoints(nodes, tmp_path):
    """stable_cascade_stage_c/_b.safetensors as ComfyUI ships them (models/checkpoints): the UNet
    under model.diffusion_model., the Stage C file's encoder + Previewer (or the Stage B file's Stage A)
    under vae."""
    import folder_paths
    from safetensors.torch import load_file, save_file

    paths = nodes["paths"]

    def prefixed(prefix, path):
        return {prefix + key: tensor for key, tensor in load_file(str(path)).items()}

    bundled_c = {**prefixed("model.diffusion_model.", paths["stage_c"]),
                 **prefixed("vae.encoder.", paths["effnet"]), **prefixed("vae.previewer.", paths["previewer"])}
    bundled_b = {**prefixed("model.diffusion_model.", paths["stage_b"]), **prefixed("vae.", paths["stage_a"])}
    save_file(bundled_c, str(tmp_path / "stable_cascade_stage_c.safetensors"))
    save_file(bundled_b, str(tmp_path / "stable_cascade_stage_b.safetensors"))
    folder_paths.add_model_folder_path("checkpoints", str(tmp_path), is_default=True)
    loaders = nodes["loaders"]

    from_bundle = loaders.StageCLoader.execute("stable_cascade_stage_c.safetensors", "fp32").args[0]
    from_file = loaders.StageCLoader.execute(paths["stage_c"].name, "fp32").args[0]
    latent = {"samples": torch.zeros(1, 16, 6, 6)}
    torch.testing.assert_close(stage_c(nodes, from_bundle, latent), stage_c(nodes, from_file, latent))

    coder = loaders.StageCCoderLoader.execute("stable_cascade_stage_c.safetensors", "stable_cascade_stage_c.safetensors").args[0]
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    encoded = coder.encode(image)
    assert tuple(encoded.shape) == (1, 16, 2, 2)
    assert tuple(coder.decode(encoded).shape) == (1, 16, 16, 3)

    stage_b_model = loaders.StageBLoader.execute("stable_cascade_stage_b.safetensors", "default").args[0]
    assert stage_b_model.model.diffusion_model.__class__.__name__ == "StageB"
    stage_a = loaders.StageALoader.execute("stable_cascade_stage_b.safetensors").args[0]
    decoded = nodes["latents"].StageADecode.execute(stage_a, {"samples": torch.randn(1, 4, 8, 8)}).args[0]
    assert tuple(decoded.shape) == (1, 32, 32, 3) and 0.0 <= decoded.min() and decoded.max() <= 1.0


def test_stage_a_vae_round_trip_follows_the_hosts_latent_convention(nodes):
    """The host keeps Stage B latents as z * 0.43 (its SC_B latent format scales by 1/0.43): our
    Stage A VAE must encode to and decode from that same convention."""
    from stable_cascade_pack.stages.stage_a import StageA
    from stable_cascade_pack.stages.checkpoint import extract
    from safetensors.torch import load_file

    vae = nodes["loaders"].StageALoader.execute(nodes["paths"]["stage_a"].name).args[0]
    state_dict, config = extract(load_file(str(nodes["paths"]["stage_a"])), want="stage_a")
    network = StageA(**config).eval()
    network.load_state_dict(state_dict)
    image = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    host_latent = vae.encode(image)
    with torch.no_grad():
        original_latent = network.encode(image.movedim(-1, 1))
    torch.testing.assert_close(host_latent, original_latent * 0.43, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        expected = network.decode(original_latent).clamp(0, 1).movedim(1, -1)
    torch.testing.assert_close(vae.decode(host_latent), expected, atol=1e-5, rtol=1e-5)


def test_previews_use_an_installed_previewer_when_previews_are_on(nodes):
    """With previews on (--preview-method auto) and a Previewer installed (here models/vae/previewer.safetensors),
    Stage C previews come from it (8x the latent) instead of the host's 16->3 colour blob; Stage B keeps
    the host's latent2rgb; with previews off there are none unless a Previewer is connected."""
    from comfy.cli_args import LatentPreviewMethod, args

    from stable_cascade_pack.nodes import previews

    loaders, paths = nodes["loaders"], nodes["paths"]
    model_c = loaders.StageCLoader.execute(paths["stage_c"].name, "default").args[0]
    model_b = loaders.StageBLoader.execute(paths["stage_b"].name, "default").args[0]
    x0 = torch.randn(1, 16, 6, 5)
    saved = args.preview_method
    try:
        args.preview_method = LatentPreviewMethod.NoPreviews
        assert previews.make_preview_fn(model_c) is None
        connected = loaders.StageCCoderLoader.execute("none", paths["previewer"].name).args[0]
        assert previews.make_preview_fn(model_c, connected)(x0)[1].size == (40, 48)

        args.preview_method = LatentPreviewMethod.Auto
        assert previews.make_preview_fn(model_c)(x0)[1].size == (40, 48)
        assert previews.installed_previewer() is previews.installed_previewer(), "loaded again instead of cached"
        assert previews.make_preview_fn(model_b)(torch.randn(1, 4, 24, 20))[1].size == (20, 24)
    finally:
        args.preview_method = saved


def test_conditioning_the_sampler_cannot_apply_is_refused_not_dropped(nodes):
    model = nodes["loaders"].StageCLoader.execute(nodes["paths"]["stage_c"].name, "default").args[0]
    with_area = [[POSITIVE[0][0], {**POSITIVE[0][1], "area": (8, 8, 0, 0), "strength": 1.0}]]
    with pytest.raises(ValueError, match="an area from ConditioningSetArea, which the GDF sampler does not apply"):
        nodes["sampling"].StageCSampler.execute(model, with_area, NEGATIVE, {"samples": torch.zeros(1, 16, 6, 6)},
                                                **{**SAMPLER_ARGS, "steps": 1, "cfg": 4.0, "shift": 2.0})


def test_host_lora_patches_reach_our_network_as_they_reach_the_hosts(nodes):
    """A LoRA in ComfyUI's Stage C key format (lora_prior_unet_*) through the host's own LoRA loading:
    it changes our model's samples exactly as it changes a host-built model's."""
    import comfy.sd

    loaders, paths = nodes["loaders"], nodes["paths"]
    ours = loaders.StageCLoader.execute(paths["stage_c"].name, "fp32").args[0]
    host = host_built_model("c", paths["stage_c"])
    generator = torch.Generator().manual_seed(11)
    lora = {}
    for target, (rows, cols) in {"down_blocks_0_2_attention_attn_to_q": (64, 64),
                                 "up_blocks_0_2_attention_attn_out_proj": (64, 64),
                                 "clip_txt_mapper": (64, 1280)}.items():
        lora[f"lora_prior_unet_{target}.lora_down.weight"] = torch.randn(4, cols, generator=generator) * 0.3
        lora[f"lora_prior_unet_{target}.lora_up.weight"] = torch.randn(rows, 4, generator=generator) * 0.3
        lora[f"lora_prior_unet_{target}.alpha"] = torch.tensor(4.0)
    latent = {"samples": torch.zeros(1, 16, 6, 6)}
    base = stage_c(nodes, ours, latent)
    patched_ours, _ = comfy.sd.load_lora_for_models(ours, None, lora, 1.0, 0.0)
    patched_host, _ = comfy.sd.load_lora_for_models(host, None, lora, 1.0, 0.0)
    assert len(patched_ours.patches) == 3, f"LoRA keys that reached our network: {sorted(patched_ours.patches)}"
    with_lora = stage_c(nodes, patched_ours, latent)
    assert (with_lora - base).abs().max() > 1e-3, "the LoRA changed nothing"
    reference = stage_c(nodes, patched_host, latent)
    torch.testing.assert_close(with_lora, reference, atol=1e-4 * max(1.0, reference.abs().max().item()), rtol=1e-4)
    assert torch.equal(stage_c(nodes, ours, latent), base), "the base model was changed in place"


@pytest.mark.parametrize("choice,stored", [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16),
                                           ("fp8_e4m3fn", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2)])
def test_every_weight_dtype_choice_stores_that_dtype_and_samples_finitely(nodes, choice, stored):
    """Storage in the chosen dtype; on this CPU the host computes in fp32 (manual cast) whenever
    storage differs."""
    loaders, paths = nodes["loaders"], nodes["paths"]
    stage_c_model = None
    if choice in loaders.STAGE_C_DTYPES:
        stage_c_model = loaders.StageCLoader.execute(paths["stage_c"].name, choice).args[0]
        assert stage_c_model.model.get_dtype() == stored
        assert torch.isfinite(stage_c(nodes, stage_c_model, {"samples": torch.zeros(1, 16, 6, 6)})).all()
    stage_b_model = loaders.StageBLoader.execute(paths["stage_b"].name, choice).args[0]
    assert stage_b_model.model.get_dtype() == stored
    latent = stage_b(nodes, stage_b_model, torch.randn(1, 16, 6, 6), {"samples": torch.zeros(1, 4, 32, 32)})
    assert torch.isfinite(latent).all()


@pytest.mark.parametrize("sampler,eta,cfg", [("ddpm", 0.0, 4.0), ("ddim", 0.0, 4.0), ("ddim", 0.5, 1.0), ("lcm", 0.0, 1.0)])
def test_every_sampler_choice_runs_and_is_seeded(nodes, sampler, eta, cfg):
    model = nodes["loaders"].StageCLoader.execute(nodes["paths"]["stage_c"].name, "default").args[0]
    latent = {"samples": torch.zeros(1, 16, 6, 6)}
    first = stage_c(nodes, model, latent, sampler=sampler, eta=eta, cfg=cfg)
    assert torch.isfinite(first).all()
    assert torch.equal(first, stage_c(nodes, model, latent, sampler=sampler, eta=eta, cfg=cfg))
    assert not torch.equal(first, stage_c(nodes, model, latent, sampler=sampler, eta=eta, cfg=cfg, seed=6))
