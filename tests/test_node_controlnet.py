"""The ControlNet nodes in-process with the host's own modules, on tiny seeded stand-ins: loading and
refusing files, the control in our GDF sampler (computed once, strength 0 = none, start/end), the host's
KSampler, and cascade ControlNets attached by the host's own nodes."""
import pytest
import torch
from devtools import standin_controlnets as STANDIN_CN
from devtools import standin_models as STANDIN
from test_node_sampling import NEGATIVE, POSITIVE, SAMPLER_ARGS


@pytest.fixture(scope="module")
def nodes(host_modules, tmp_path_factory):
    import folder_paths

    models = tmp_path_factory.mktemp("cn_models")
    paths = STANDIN.write_standin_models(models, roles=("stage_c", "effnet"))
    paths.update(STANDIN_CN.write_standin_controlnets(models))
    paths["wide"] = STANDIN_CN.write_standin_controlnet(models / "controlnet" / "canny_for_wider_stage_c.safetensors", "canny", c_proj=128)
    (models / "controlnet" / "stage_c_by_mistake.safetensors").write_bytes(paths["stage_c"].read_bytes())
    for folder in ("diffusion_models", "vae", "controlnet"):
        folder_paths.add_model_folder_path(folder, str(models / folder), is_default=True)
    from stable_cascade_pack.nodes import controlnet, loaders, sampling

    stage_c = loaders.StageCLoader.execute(paths["stage_c"].name, "fp32").args[0]
    vae = loaders.StageCCoderLoader.execute(paths["effnet"].name, "none").args[0]
    return {"controlnet": controlnet, "sampling": sampling, "stage_c": stage_c, "vae": vae, "paths": paths}


def image(seed, height=96, width=128, channels=3):
    return torch.rand(1, height, width, channels, generator=torch.Generator().manual_seed(seed))


def load(nodes, name):
    return nodes["controlnet"].ControlNetLoader.execute(name).args[0]


def apply(nodes, control_net, hint, strength=1.0, start=0.0, end=1.0, mask=None, vae=None, positive=POSITIVE, negative=NEGATIVE):
    return nodes["controlnet"].ControlNetApply.execute(positive, negative, control_net, hint, strength, start, end,
                                                       mask=mask, stage_c_vae=vae).args


def sample(nodes, positive, negative, steps=3, cfg=4.0, latent_size=(3, 4)):
    latent = {"samples": torch.zeros(1, 16, *latent_size)}
    args = {**SAMPLER_ARGS, "steps": steps, "cfg": cfg, "shift": 2.0}
    return nodes["sampling"].StageCSampler.execute(nodes["stage_c"], positive, negative, latent, **args).args[0]["samples"]


@pytest.fixture(scope="module")
def canny(nodes):
    return load(nodes, "canny.safetensors")


def test_loader_tells_the_kind_from_the_file(nodes):
    kinds = {name: load(nodes, f"{name}.safetensors").spec for name in ("canny", "inpainting", "super_resolution")}
    assert {name: (spec.kind, spec.bottleneck, spec.c_in) for name, spec in kinds.items()} == {
        "canny": ("canny", "effnet", 1), "inpainting": ("inpainting", "effnet", 4),
        "super_resolution": ("super_resolution", "large", 16)}


def test_loader_refuses_other_files(nodes):
    from stable_cascade_pack.stages.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"stage_c_by_mistake.safetensors is a Stage C .* needs a Stable Cascade ControlNet file. "
                                              r"Load it with 'Load Stage C Prior \(Stable Cascade\)' instead"):
        load(nodes, "stage_c_by_mistake.safetensors")


def test_loader_refuses_an_sdxl_controlnet(nodes, tmp_path):
    import folder_paths
    from safetensors.torch import save_file

    from stable_cascade_pack.stages.checkpoint import CheckpointError

    folder = tmp_path / "controlnet"
    folder.mkdir()
    save_file({"input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3), "label_emb.0.0.weight": torch.zeros(1280, 2816),
               "zero_convs.0.0.weight": torch.zeros(320, 320, 1, 1)}, str(folder / "sdxl_canny.safetensors"))
    folder_paths.add_model_folder_path("controlnet", str(folder))
    with pytest.raises(CheckpointError, match="sdxl_canny.safetensors is .*SDXL.*needs a Stable Cascade ControlNet file"):
        load(nodes, "sdxl_canny.safetensors")


def test_control_changes_the_result_and_strength_zero_is_none(nodes, canny):
    hint = image(1)
    plain = sample(nodes, POSITIVE, NEGATIVE)
    controlled = sample(nodes, *apply(nodes, canny, hint))
    off = sample(nodes, *apply(nodes, canny, hint, strength=0.0))
    assert (controlled - plain).abs().max() > 1e-3
    assert torch.equal(off, plain)
    vertical_edge, horizontal_edge = torch.zeros(1, 96, 128, 3), torch.zeros(1, 96, 128, 3)
    vertical_edge[:, :, :64], horizontal_edge[:, :48] = 1.0, 1.0
    # The random stand-in EfficientNet is nearly blind to its input, so only "not equal" is asked here;
    # tests/test_controlnet_module.py proves the network itself against the host's.
    assert not torch.equal(sample(nodes, *apply(nodes, canny, vertical_edge)), sample(nodes, *apply(nodes, canny, horizontal_edge)))


def test_residuals_are_computed_once_per_run(nodes, canny):
    calls = []
    hook = canny.patcher.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        sample(nodes, *apply(nodes, canny, image(1)), steps=4)
    finally:
        hook.remove()
    assert len(calls) == 1  # one ControlNet call for 4 steps of CFG on both prompts


def test_start_and_end_select_the_steps(nodes, canny):
    """GDF steps at t = 1, 0.75, 0.5, 0.25: start 0.5 leaves the first two steps uncontrolled."""
    from stable_cascade_pack.controlnet.schedule import noise_condition_range
    from stable_cascade_pack.samplers.gdf import noise_levels

    r = noise_levels(torch.linspace(1, 0, 5)[:4], 2.0).r
    r_high, r_low = noise_condition_range(0.5, 1.0, 2.0)
    assert [bool(r_low <= float(v) <= r_high) for v in r] == [False, False, True, True]
    r_high, r_low = noise_condition_range(0.0, 0.3, 2.0)
    assert [bool(r_low <= float(v) <= r_high) for v in r] == [True, True, False, False]
    hint = image(1)
    full = sample(nodes, *apply(nodes, canny, hint), steps=4)
    late = sample(nodes, *apply(nodes, canny, hint, start=0.5), steps=4)
    plain = sample(nodes, POSITIVE, NEGATIVE, steps=4)
    assert (late - full).abs().max() > 1e-4 and (late - plain).abs().max() > 1e-4
    never = sample(nodes, *apply(nodes, canny, hint, start=0.9, end=0.95), steps=4)  # no step in [0.9, 0.95]
    assert torch.equal(never, plain)


def test_cfg_one_and_positive_only_control(nodes, canny):
    positive, _ = apply(nodes, canny, image(1))
    plain = sample(nodes, POSITIVE, NEGATIVE, cfg=1.0)
    assert (sample(nodes, positive, NEGATIVE, cfg=1.0) - plain).abs().max() > 1e-3
    assert (sample(nodes, positive, NEGATIVE) - sample(nodes, POSITIVE, NEGATIVE)).abs().max() > 1e-3


def test_two_controlnets_chain(nodes, canny):
    inpainting = load(nodes, "inpainting.safetensors")
    mask = torch.zeros(1, 96, 128)
    mask[:, 20:60, 30:90] = 1.0
    one = apply(nodes, canny, image(1))
    both = apply(nodes, inpainting, image(3), mask=mask, positive=one[0], negative=one[1])
    assert both[0][0][1]["control"].previous_controlnet is one[0][0][1]["control"]
    assert (sample(nodes, *both) - sample(nodes, *one)).abs().max() > 1e-4


def test_inpainting_hint_and_mask_errors(nodes):
    inpainting = load(nodes, "inpainting.safetensors")
    picture = image(3)
    mask = torch.zeros(1, 96, 128)
    mask[:, 10:50, 10:50] = 1.0
    positive, _ = apply(nodes, inpainting, picture, mask=mask)
    hint = positive[0][1]["control"].cond_hint_original
    assert hint.shape == (1, 4, 96, 128)
    assert torch.equal(hint[:, 3], mask) and (hint[:, :3, 10:50, 10:50] == 1).all()
    assert torch.equal(hint[:, :3, 60:], picture.movedim(-1, 1)[:, :, 60:])
    with pytest.raises(ValueError, match="'mask' is 64x64 but 'image' is 128x96"):
        apply(nodes, inpainting, picture, mask=torch.zeros(1, 64, 64))
    with pytest.raises(ValueError, match="needs a 'mask'"):
        apply(nodes, inpainting, picture)


def test_canny_refuses_rgba(nodes, canny):
    with pytest.raises(ValueError, match="canny ControlNet takes an RGB image, but 'image' has 4 channels"):
        apply(nodes, canny, image(1, channels=4))


def test_super_resolution_uses_the_effnet_latent_twice_as_large(nodes):
    sr = load(nodes, "super_resolution.safetensors")
    low_res = image(4, 64, 96)
    with pytest.raises(ValueError, match="needs 'stage_c_vae'"):
        apply(nodes, sr, low_res)
    positive, negative = apply(nodes, sr, low_res, vae=nodes["vae"])
    hint = positive[0][1]["control"].cond_hint_original
    latent = nodes["vae"].encode(low_res)
    assert hint.shape == (1, 16, 4, 6) and torch.equal(hint[..., ::2, ::2], latent.float())
    plain = sample(nodes, POSITIVE, NEGATIVE, cfg=1.0, latent_size=(4, 6))
    assert (sample(nodes, positive, negative, cfg=1.0, latent_size=(4, 6)) - plain).abs().max() > 1e-3


def test_a_controlnet_for_another_width_is_refused_when_sampling(nodes):
    wide = load(nodes, "canny_for_wider_stage_c.safetensors")
    with pytest.raises(ValueError, match=r"was made for a Stage C 128 channels wide, but this Stage C is 64 channels wide"):
        sample(nodes, *apply(nodes, wide, image(1)))


def test_stage_b_refuses_control(nodes, canny):
    positive, negative = apply(nodes, canny, image(1))
    from stable_cascade_pack.nodes.conditioning import stage_b_inputs

    with pytest.raises(ValueError, match="ControlNets act on Stage C only"):
        stage_b_inputs(positive, torch.zeros(1, 16, 3, 3), 1, "positive")


def test_foreign_controlnets_are_refused(nodes):
    import comfy.controlnet

    with pytest.raises(ValueError, match="not a Stable Cascade ControlNet"):
        apply(nodes, comfy.controlnet.ControlNet(), image(1))
    foreign = [[POSITIVE[0][0], {**POSITIVE[0][1], "control": comfy.controlnet.ControlNet()}]]
    with pytest.raises(ValueError, match="not a Stable Cascade ControlNet"):
        sample(nodes, foreign, NEGATIVE)


def host_adapter(nodes, path):
    """What the host's ControlNetLoader makes of a cascade ControlNet (its ControlNet hard-codes 2048 channels, so
    built here with the stand-in's 64)."""
    import comfy.controlnet
    import comfy.ldm.cascade.controlnet
    import comfy.utils

    state_dict = {k: v.float() for k, v in comfy.utils.load_torch_file(str(path)).items()}
    model = comfy.ldm.cascade.controlnet.ControlNet(c_in=1, c_proj=64, proj_blocks=[0, 4, 8, 12, 51, 55, 59, 63])
    model.load_state_dict(state_dict, strict=True)
    return comfy.controlnet.T2IAdapter(model.eval(), 1, 32, "bilinear")


def test_host_apply_node_and_host_loader_work_in_our_sampler(nodes, canny):
    """The host's ControlNetApplyAdvanced with our ControlNet, and with the host's own cascade ControlNet,
    give the same result in our sampler (the same weights, the same raw hint)."""
    import nodes as host_nodes

    hint = image(1)
    apply_advanced = host_nodes.ControlNetApplyAdvanced()
    ours = apply_advanced.apply_controlnet(POSITIVE, NEGATIVE, canny, hint, 1.0, 0.0, 1.0)
    theirs = apply_advanced.apply_controlnet(POSITIVE, NEGATIVE, host_adapter(nodes, nodes["paths"]["canny"]), hint, 1.0, 0.0, 1.0)
    with_ours, with_theirs = sample(nodes, *ours), sample(nodes, *theirs)
    assert (with_ours - sample(nodes, POSITIVE, NEGATIVE)).abs().max() > 1e-3
    torch.testing.assert_close(with_ours, with_theirs, atol=1e-3, rtol=1e-3)  # bf16 file: ours casts, theirs holds fp32


def test_host_ksampler_applies_our_control(nodes, canny):
    import nodes as host_nodes

    latent = {"samples": torch.zeros(1, 16, 3, 4)}

    def ksample(positive, negative):
        return host_nodes.common_ksampler(nodes["stage_c"], 7, 3, 4.0, "euler", "simple", positive, negative, latent)[0]["samples"]

    hint = image(1)
    plain = ksample(POSITIVE, NEGATIVE)
    controlled = ksample(*apply(nodes, canny, hint))
    assert torch.isfinite(controlled).all() and (controlled - plain).abs().max() > 1e-3
    assert torch.equal(ksample(*apply(nodes, canny, hint, strength=0.0)), plain)
    assert torch.equal(ksample(*apply(nodes, canny, hint, start=0.9, end=0.95)), plain)


def test_face_identity_loads_with_random_weights_but_cannot_be_applied(nodes, tmp_path):
    """Its weights were never released: a random file of the original's shape loads, and applying it says why it cannot."""
    import folder_paths

    STANDIN_CN.write_standin_controlnet(tmp_path / "controlnet" / "face_identity_random.safetensors", "identity")
    folder_paths.add_model_folder_path("controlnet", str(tmp_path / "controlnet"))
    identity = load(nodes, "face_identity_random.safetensors")
    assert (identity.spec.kind, identity.spec.bottleneck, identity.spec.c_in, len(identity.spec.proj_blocks)) == \
        ("identity", "simple", 512, 64)
    with pytest.raises(ValueError, match="face-identity ControlNet takes a map of ArcFace face embeddings.*never released"):
        apply(nodes, identity, image(1))
    # The network itself runs on a face map at the latent grid and feeds every one of Stage C's 64 ResBlock calls.
    face_map = torch.zeros(1, 512, 3, 4)
    face_map[:, :, 1:3, 1:3] = torch.nn.functional.normalize(torch.randn(512), dim=0).view(-1, 1, 1)
    with torch.no_grad():
        out = identity.patcher.model(face_map)
    assert len(out) == 64 and all(r is not None and r.shape == (1, 64, 3, 4) for r in out)


def test_apply_validates_the_noise_range(nodes):
    validate = nodes["controlnet"].ControlNetApply.validate_inputs
    assert validate(0.0, 1.0) is True and validate(None, 0.5) is True
    assert "start_percent (0.6) is after end_percent (0.2)" in validate(0.6, 0.2)
    assert "end_percent must be between 0 and 1, got 1.5" in validate(0.0, 1.5)
