"""diffusers' StableCascadeUNet (prior/ and decoder/ folders) -> pack layout -> the host's StageC/StageB,
compared with diffusers' own forward on the same inputs and weights."""
import torch
from conftest import seeded_random

from stable_cascade_pack.stages.checkpoint import extract, identify

import diffusers.models.unets.unet_stable_cascade as diffusers_unet  # test-only oracle, installed by setup_env.sh

PRIOR = dict(in_channels=16, out_channels=16, timestep_ratio_embedding_dim=64, patch_size=1, conditioning_dim=64,
             block_out_channels=(64, 128), num_attention_heads=(1, 2), down_num_layers_per_block=(1, 2),
             up_num_layers_per_block=(2, 1), down_blocks_repeat_mappers=(1, 1), up_blocks_repeat_mappers=(1, 2),
             block_types_per_layer=(("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"),) * 2,
             clip_text_in_channels=48, clip_text_pooled_in_channels=48, clip_image_in_channels=32, clip_seq=4,
             kernel_size=3, dropout=(0.1, 0.1), self_attn=True, timestep_conditioning_type=("sca", "crp"),
             switch_level=(False,))
DECODER = dict(in_channels=4, out_channels=4, timestep_ratio_embedding_dim=64, patch_size=2, conditioning_dim=64,
               block_out_channels=(64, 64, 128), num_attention_heads=(-1, -1, 2), down_num_layers_per_block=(1, 1, 2),
               up_num_layers_per_block=(2, 1, 1), down_blocks_repeat_mappers=(1, 1, 1), up_blocks_repeat_mappers=(3, 2, 1),
               block_types_per_layer=(("SDCascadeResBlock", "SDCascadeTimestepBlock"),) * 2
               + (("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"),),
               clip_text_pooled_in_channels=32, clip_seq=4, effnet_in_channels=16, pixel_mapper_in_channels=3,
               kernel_size=3, dropout=(0, 0, 0.1), self_attn=True, timestep_conditioning_type=("sca",), switch_level=None)


def seeded_diffusers_unet(config, seed):
    return seeded_random(diffusers_unet.StableCascadeUNet(**config), seed)


def host_model(kind, config, state_dict):
    import comfy.ops
    from comfy.ldm.cascade.stage_b import StageB
    from comfy.ldm.cascade.stage_c import StageC

    model = (StageC if kind == "stage_c" else StageB)(**config, operations=comfy.ops.disable_weight_init)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def test_prior_converts_and_matches_diffusers_forward(host_modules):
    diffusers_model = seeded_diffusers_unet(PRIOR, seed=21)
    state_dict = diffusers_model.state_dict()
    info = identify(state_dict)
    assert (info.kind, info.layout, info.variant) == ("stage_c", "diffusers", "custom")
    pack_state_dict, config = extract(state_dict, want="stage_c", source_name="prior/diffusion_pytorch_model.safetensors")
    assert config["c_hidden"] == [64, 128] and config["nhead"] == [1, 2] and config["block_repeat"] == [[1, 1], [1, 2]]
    model = host_model("stage_c", config, pack_state_dict)

    generator = torch.Generator().manual_seed(22)
    x = torch.randn(2, 16, 8, 8, generator=generator)
    r = torch.tensor([0.25, 0.9])
    clip_text = torch.randn(2, 6, 48, generator=generator)
    clip_text_pooled = torch.randn(2, 1, 48, generator=generator)
    clip_img = torch.randn(2, 1, 32, generator=generator)
    with torch.no_grad():
        expected = diffusers_model(sample=x, timestep_ratio=r, clip_text_pooled=clip_text_pooled,
                                   clip_text=clip_text, clip_img=clip_img).sample
        out = model(x, r, clip_text, clip_text_pooled, clip_img)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_decoder_converts_and_matches_diffusers_forward(host_modules):
    diffusers_model = seeded_diffusers_unet(DECODER, seed=23)
    state_dict = diffusers_model.state_dict()
    info = identify(state_dict)
    assert (info.kind, info.layout) == ("stage_b", "diffusers")
    pack_state_dict, config = extract(state_dict, want="stage_b", source_name="decoder/diffusion_pytorch_model.safetensors")
    assert "clip_mapper.weight" in pack_state_dict and config["c_clip"] == 32
    assert config["block_repeat"] == [[1, 1, 1], [3, 2, 1]] and config["nhead"] == [-1, -1, 2]
    model = host_model("stage_b", config, pack_state_dict)

    generator = torch.Generator().manual_seed(24)
    x = torch.randn(2, 4, 32, 32, generator=generator)
    r = torch.tensor([0.25, 0.9])
    effnet = torch.randn(2, 16, 6, 6, generator=generator)
    clip = torch.randn(2, 1, 32, generator=generator)
    with torch.no_grad():
        # diffusers calls the pooled CLIP input of the decoder clip_text_pooled; pixels default to zeros in both
        expected = diffusers_model(sample=x, timestep_ratio=r, clip_text_pooled=clip, effnet=effnet).sample
        out = model(x, r, effnet, clip)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_released_diffusers_key_names_convert_to_released_pack_keys(reference_dir):
    """The released prior/decoder folders: diffusers' own converter's names map back onto our keys."""
    import json

    from stable_cascade_pack.stages.checkpoint.layouts import apply_key_map, unet_key_map
    from diffusers.loaders.single_file_utils import convert_stable_cascade_unet_single_file_to_diffusers

    reference = json.loads((reference_dir / "official_state_dict_keys.json").read_text())
    for name, kind, variant in (("stage_c_lite_1B", "stage_c", "lite"), ("stage_b_big_3B(1.5B)", "stage_b", "big")):
        original = {key: torch.empty(shape, device="meta") for key, shape in reference[name]["keys"].items()}
        as_diffusers = convert_stable_cascade_unet_single_file_to_diffusers(original)
        info = identify(as_diffusers)
        assert (info.kind, info.variant, info.layout) == (kind, variant, "diffusers")
        from_diffusers, config = extract(as_diffusers, want=kind)
        from_original, original_config = extract(original, want=kind)
        assert config == original_config
        assert {k: tuple(v.shape) for k, v in from_diffusers.items()} == {k: tuple(v.shape) for k, v in from_original.items()}
