"""Images in, through the pack's nodes in-process with the host's own modules: the Stage C and Stage A
encode nodes against the host's networks and the original's preprocessing, the compression setting on
a table of sizes, image-to-image against the c_img2img fixture, image variation through the host's
CLIPVisionLoader/CLIPVisionEncode/unCLIPConditioning, and the errors bad inputs get."""
import json
import types

import pytest
import torch
from safetensors.torch import load_file
from test_gdf_fixtures import ATOL, standin_model

from devtools import standin_clip_vision, standin_models
from test_stage_parity_host import random_state_dict



@pytest.fixture(scope="module")
def nodes(host_modules, tmp_path_factory):
    import folder_paths

    models = tmp_path_factory.mktemp("models")
    paths = standin_models.write_standin_models(models)
    for folder in ("diffusion_models", "vae"):
        folder_paths.add_model_folder_path(folder, str(models / folder), is_default=True)
    from stable_cascade_pack.nodes import images, latents, loaders, sampling

    return types.SimpleNamespace(images=images, latents=latents, loaders=loaders, sampling=sampling, paths=paths)


@pytest.fixture(scope="module")
def coder_vae(nodes):
    return nodes.loaders.StageCCoderLoader.execute(nodes.paths["effnet"].name, "none").args[0]


@pytest.fixture(scope="module")
def host_coder_vae(nodes):
    """The host's own VAE (StageC_coder) built from the same encoder file, as its Load VAE builds it."""
    import comfy.sd

    return comfy.sd.VAE(sd=load_file(str(nodes.paths["effnet"])))


def smooth_images(batch, height, width, seed):
    """Pictures with structure at several scales (not pixel noise), [B,H,W,3] in 0..1."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 8, 8, generator=generator)
    fine = torch.rand(batch, 3, height // 4, width // 4, generator=generator)
    up = torch.nn.functional.interpolate
    image = 0.7 * up(coarse, size=(height, width), mode="bicubic") + 0.3 * up(fine, size=(height, width), mode="nearest")
    return image.clamp(0, 1).movedim(1, -1).contiguous()


def encode_c(nodes, vae, image, compression="original", number=42.67):
    stage_c, stage_b = nodes.images.StageCEncode.execute(image, vae, compression, number).args
    return stage_c["samples"], stage_b["samples"]


def empty(nodes, width, height, compression="original", number=42.67, batch=1):
    stage_c, stage_b = nodes.latents.EmptyLatent.execute(width, height, batch, compression, number).args
    return stage_c["samples"], stage_b["samples"]


# --- The compression setting on a table of sizes -------------------------------------------------

# (width, height): Stage C latent [h, w] with the original 42.67, and with 'auto'
SIZES = {
    (1024, 1024): ((24, 24), (24, 24)),
    (1536, 1024): ((24, 36), (20, 30)),  # official.md 9.3: 1536x1024 -> 36x24 (w x h)
    (1920, 1080): ((26, 45), (18, 32)),  # 16:9
    (1080, 1920): ((45, 26), (32, 18)),  # 9:16
    (2048, 2048): ((48, 48), (24, 24)),  # official.md 9.3: 2048² -> 48x48
    (512, 512): ((12, 12), (24, 24)),
}


@pytest.mark.parametrize("size", list(SIZES), ids=[f"{w}x{h}" for w, h in SIZES])
def test_empty_latent_compression_table(nodes, size):
    width, height = size
    original, auto = SIZES[size]
    stage_c, stage_b = empty(nodes, width, height, "original")
    assert tuple(stage_c.shape) == (1, 16, *original)
    assert tuple(stage_b.shape) == (1, 4, height // 4, width // 4)
    assert tuple(empty(nodes, width, height, "number", 42.67)[0].shape) == (1, 16, *original)
    stage_c, stage_b = empty(nodes, width, height, "auto")
    assert tuple(stage_c.shape) == (1, 16, *auto)
    assert tuple(stage_b.shape) == (1, 4, height // 4, width // 4)  # Stage B keeps the picture's own size
    tokens = auto[0] * auto[1]
    assert 576 <= tokens <= 576 * 1.1, f"auto gives {tokens} Stage C tokens, not about 24x24"


def test_a_number_compression_divides_and_rounds_up(nodes):
    assert tuple(empty(nodes, 1024, 768, "number", 32.0)[0].shape) == (1, 16, 24, 32)
    assert tuple(empty(nodes, 1000, 1000, "number", 64.0)[0].shape) == (1, 16, 16, 16)  # 15.6 -> 16
    assert "compression: 'tiny' is not one of the choices" in nodes.latents.EmptyLatent.validate_inputs(1024, 1024, "tiny")


@pytest.mark.parametrize("size,compression", [((1024, 1024), "original"), ((1920, 1080), "original"),
                                              ((1080, 1920), "auto"), ((2048, 2048), "auto"), ((512, 512), "auto"),
                                              ((512, 512), "original")])
def test_an_encoded_image_matches_the_empty_latent_of_its_size(nodes, coder_vae, size, compression):
    width, height = size
    image = smooth_images(1, height, width, seed=width + height)
    stage_c, stage_b = encode_c(nodes, coder_vae, image, compression)
    empty_c, empty_b = empty(nodes, width, height, compression)
    assert stage_c.shape == empty_c.shape and stage_b.shape == empty_b.shape
    assert torch.isfinite(stage_c).all() and not torch.equal(stage_c, empty_c)
    assert torch.equal(stage_b, empty_b)


# --- Encode parity ------------------------------------------------------------------------------

@pytest.mark.parametrize("width,height", [(1024, 1024), (1536, 1024), (800, 600)])
def test_stage_c_encode_is_the_originals_preprocessing_on_the_hosts_encoder(nodes, coder_vae, host_coder_vae, width, height):
    """The original img2img: resize_image (torchvision, short side 768 for a 1024 picture, antialiased)
    then effnet(effnet_preprocess(...)); here the encoder is the host's StageC_coder on the same weights.
    800x600 (not a 1024 picture) checks the general rule: the picture scaled to 32x the latent size."""
    import torchvision.transforms.functional as TF

    image = smooth_images(2, height, width, seed=7)
    ours, _ = encode_c(nodes, coder_vae, image)
    latent_h, latent_w = -(-height * 24 // 1024), -(-width * 24 // 1024)  # ceil(side / 42.67)
    resized = TF.resize(image.movedim(-1, 1), [latent_h * 32, latent_w * 32], antialias=True)
    if (width, height) != (800, 600):  # a 1024 picture: exactly the original's resize_image(size=768)
        torch.testing.assert_close(resized, TF.resize(image.movedim(-1, 1), 768, antialias=True))
    host = host_coder_vae.encode(resized.movedim(1, -1))
    assert ours.shape == host.shape == (2, 16, latent_h, latent_w)
    torch.testing.assert_close(ours, host, atol=1e-5 * max(1.0, host.abs().max().item()), rtol=1e-5)


def test_the_hosts_vae_encode_keeps_working_with_our_stage_c_vae(nodes, coder_vae, host_coder_vae):
    import nodes as host_nodes

    image = smooth_images(1, 128, 192, seed=8)
    (ours,) = host_nodes.VAEEncode().encode(coder_vae, image)
    (host,) = host_nodes.VAEEncode().encode(host_coder_vae, image)
    assert ours["samples"].shape == (1, 16, 4, 6)
    torch.testing.assert_close(ours["samples"], host["samples"], atol=1e-5 * max(1.0, host["samples"].abs().max().item()), rtol=1e-5)


@pytest.fixture(scope="module")
def stage_a_vaes(nodes, tmp_path_factory):
    """Our Stage A VAE (through the loader) and the host's (comfy.sd.VAE) on the same real-size random weights."""
    import comfy.sd
    import folder_paths
    from safetensors.torch import save_file

    from stable_cascade_pack.stages.stage_a import StageA

    weights = random_state_dict(StageA().state_dict(), 21)
    folder = tmp_path_factory.mktemp("stage_a_full")
    save_file(weights, str(folder / "stage_a_full.safetensors"))
    folder_paths.add_model_folder_path("vae", str(folder))
    ours = nodes.loaders.StageALoader.execute("stage_a_full.safetensors").args[0]
    return ours, comfy.sd.VAE(sd=weights)


def test_stage_a_encode_and_decode_equal_the_hosts_stage_a(nodes, stage_a_vaes):
    ours_vae, host_vae = stage_a_vaes
    image = smooth_images(2, 64, 96, seed=9)
    encoded = nodes.images.StageAEncode.execute(ours_vae, image).args[0]["samples"]
    host = host_vae.encode(image)
    assert encoded.shape == host.shape == (2, 4, 16, 24)
    torch.testing.assert_close(encoded, host, atol=1e-5 * max(1.0, host.abs().max().item()), rtol=1e-5)
    decoded = nodes.latents.StageADecode.execute(ours_vae, {"samples": encoded}).args[0]
    host_decoded = host_vae.decode(host).clamp(0, 1)
    assert decoded.shape == host_decoded.shape == (2, 64, 96, 3)
    torch.testing.assert_close(decoded, host_decoded, atol=1e-4, rtol=1e-4)


def test_stage_a_encode_and_decode_nodes_reproduce_the_original(nodes, fixtures_dir, tmp_path):
    """fixtures/forward/stage_a (the original StageA): its weights as a file through the loader, its image
    through the nodes. The node's latent is the host's convention, the original's encoded times 0.43."""
    import folder_paths
    from safetensors.torch import save_file

    save_file(load_file(fixtures_dir / "forward" / "stage_a.state_dict.safetensors"), str(tmp_path / "stage_a_fixture.safetensors"))
    folder_paths.add_model_folder_path("vae", str(tmp_path))
    io = load_file(fixtures_dir / "forward" / "stage_a.io.safetensors")
    vae = nodes.loaders.StageALoader.execute("stage_a_fixture.safetensors").args[0]
    encoded = nodes.images.StageAEncode.execute(vae, io["img"].movedim(1, -1)).args[0]["samples"]
    torch.testing.assert_close(encoded, io["encoded"] * 0.43, atol=1e-5, rtol=1e-4)
    roundtrip = nodes.latents.StageADecode.execute(vae, {"samples": encoded}).args[0]
    torch.testing.assert_close(roundtrip, io["roundtrip"].clamp(0, 1).movedim(1, -1), atol=1e-5, rtol=1e-4)


def test_stage_a_encode_crops_to_multiples_of_8_from_the_centre(nodes, stage_a_vaes):
    ours_vae, _ = stage_a_vaes
    image = smooth_images(1, 70, 85, seed=10)  # -> 64 x 80, offsets 3 and 2
    encoded = nodes.images.StageAEncode.execute(ours_vae, image).args[0]["samples"]
    cropped = nodes.images.StageAEncode.execute(ours_vae, image[:, 3:67, 2:82].contiguous()).args[0]["samples"]
    assert encoded.shape == (1, 4, 16, 20)
    torch.testing.assert_close(encoded, cropped)


# --- Image-to-image through the node path against the original (fixtures/gdf/c_img2img) ----------------

class FixtureStandInNetwork(torch.nn.Module):
    """The fixture's stand-in epsilon model in the place of Stage C, recording what it is called with."""

    def __init__(self, cond_keys, text_width):
        super().__init__()
        self.model = standin_model(cond_keys)
        self.clip_txt_mapper = torch.nn.Linear(text_width, 1)  # the sampler node reads the text width from here
        self.dtype = torch.float32  # the host reads the storage dtype from here
        self.calls = []

    def forward(self, x, r, **cond):
        self.calls.append((x.clone(), r.clone(), {k: v.clone() for k, v in cond.items()}))
        return self.model(x, r, **cond)


def test_image_to_image_node_path_equals_the_original(nodes, fixtures_dir):
    meta = json.loads((fixtures_dir / "gdf" / "c_img2img.json").read_text())
    data = load_file(fixtures_dir / "gdf" / "c_img2img.safetensors")
    model = nodes.loaders.StageCLoader.execute(nodes.paths["stage_c"].name, "fp32").args[0]
    network = FixtureStandInNetwork(meta["model_cond_keys_in_order"], data["cond.clip_text"].shape[-1])
    model.model.diffusion_model = network

    def host_conditioning(prefix, image_embeds):
        extras = {"pooled_output": data[f"{prefix}.clip_text_pooled"][:, 0]}
        if image_embeds is not None:  # as the host's unCLIPConditioning stores a CLIPVisionEncode output
            extras["unclip_conditioning"] = [{"clip_vision_output": types.SimpleNamespace(image_embeds=image_embeds),
                                              "strength": 1.0, "noise_augmentation": 0.0}]
        return [[data[f"{prefix}.clip_text"], extras]]

    assert torch.count_nonzero(data["uncond.clip_img"]) == 0
    positive = host_conditioning("cond", data["cond.clip_img"][:, 0])
    negative = host_conditioning("uncond", None)
    result = nodes.sampling.StageCSampler.execute(
        model, positive, negative, {"samples": data["x_clean"]}, seed=meta["seed"], steps=meta["timesteps"],
        cfg=meta["cfg"], shift=meta["shift"], cfg_rho=meta["cfg_rho"], sampler="ddpm", eta=0.0, denoise=meta["t_start"],
    ).args[0]["samples"]

    assert len(network.calls) == meta["timesteps"]
    x_first, _, cond_first = network.calls[0]
    torch.testing.assert_close(x_first[:1], data["x_init"], atol=ATOL, rtol=0)  # the start latent
    for key in meta["model_cond_keys_in_order"]:
        torch.testing.assert_close(cond_first[key], torch.cat([data[f"cond.{key}"], data[f"uncond.{key}"]]))
    for step, (x, r, _) in enumerate(network.calls):  # the trajectory
        torch.testing.assert_close(x[:1], data["x_t"][step], atol=ATOL, rtol=0)
        torch.testing.assert_close(r[:1], data["r_fed"][step], atol=1e-6, rtol=0)
    torch.testing.assert_close(result, data["result"], atol=ATOL, rtol=0)


# --- Image variation through the host's CLIP vision nodes ---------------------------------------

@pytest.fixture(scope="module")
def clip_vision(host_modules):
    import comfy.clip_vision

    return comfy.clip_vision.load(str(standin_clip_vision.standin_clip_vision_path()))


@torch.no_grad()
def test_the_hosts_clip_vision_encode_gives_the_originals_image_embeds(clip_vision):
    """The original: CLIPVisionModelWithProjection(openai/clip-vit-large-patch14).image_embeds after Resize(224,
    bicubic), CenterCrop(224), CLIP normalisation. On a 224x224 8-bit picture the host's preprocessing
    (which also rounds to 8 bits) changes nothing, so the embeddings must agree."""
    import nodes as host_nodes
    import torchvision.transforms as T
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = standin_clip_vision.standin_clip_vision_path()
    config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    oracle = CLIPVisionModelWithProjection(config).eval()
    missing, unexpected = oracle.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)

    image = (smooth_images(1, 224, 224, seed=11) * 255).round() / 255
    (host_output,) = host_nodes.CLIPVisionEncode().encode(clip_vision, image, "center")
    preprocess = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=True), T.CenterCrop(224),
                            T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    expected = oracle(pixel_values=preprocess(image.movedim(-1, 1))).image_embeds
    assert host_output.image_embeds.shape == (1, 768)
    torch.testing.assert_close(host_output.image_embeds.float(), expected, atol=2e-4 * expected.abs().max().item(), rtol=1e-3)


def test_image_variation_conditions_stage_c_as_the_originals_clip_img(nodes, clip_vision):
    """unCLIPConditioning(strength) on the empty caption: the Stage C network gets clip_img = strength *
    image_embeds [B,1,768] for the conditional half and zeros of that shape for the unconditional one;
    two unCLIPConditioning in a chain (or a batch of images) mix as more image tokens."""
    import nodes as host_nodes

    model = nodes.loaders.StageCLoader.execute(nodes.paths["stage_c"].name, "fp32").args[0]
    network = model.model.diffusion_model
    calls = []
    hook = network.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs), with_kwargs=True)
    generator = torch.Generator().manual_seed(12)
    caption = [[torch.randn(1, 77, 1280, generator=generator), {"pooled_output": torch.randn(1, 1280, generator=generator)}]]
    images = smooth_images(2, 256, 320, seed=13)
    (first,) = host_nodes.CLIPVisionEncode().encode(clip_vision, images[:1], "center")
    (second,) = host_nodes.CLIPVisionEncode().encode(clip_vision, images[1:], "center")
    (one_image,) = host_nodes.unCLIPConditioning().apply_adm(caption, first, 0.6, 0.0)
    (two_images,) = host_nodes.unCLIPConditioning().apply_adm(one_image, second, 1.0, 0.0)
    args = dict(seed=1, steps=1, cfg=4.0, shift=2.0, cfg_rho=0.7, sampler="ddpm", eta=0.0, denoise=1.0)
    latent = {"samples": torch.zeros(2, 16, 6, 6)}
    try:
        plain = nodes.sampling.StageCSampler.execute(model, caption, caption, latent, **args).args[0]["samples"]
        varied = nodes.sampling.StageCSampler.execute(model, one_image, caption, latent, **args).args[0]["samples"]
        mixed = nodes.sampling.StageCSampler.execute(model, two_images, caption, latent, **args).args[0]["samples"]
    finally:
        hook.remove()
    clip_img = [call["clip_img"] for call in calls]
    assert torch.count_nonzero(clip_img[0]) == 0 and clip_img[0].shape == (4, 1, 768)
    expected = (first.image_embeds * 0.6).expand(2, 768)[:, None]
    torch.testing.assert_close(clip_img[1][:2], expected)
    assert torch.count_nonzero(clip_img[1][2:]) == 0
    expected_mix = torch.stack([first.image_embeds[0] * 0.6, second.image_embeds[0]])[None].expand(2, 2, 768)
    torch.testing.assert_close(clip_img[2][:2], expected_mix)
    assert torch.count_nonzero(clip_img[2][2:]) == 0 and clip_img[2].shape == (4, 2, 768)
    assert not torch.allclose(plain, varied) and not torch.allclose(varied, mixed)


# --- Bad inputs ---------------------------------------------------------------------------------

def test_encode_nodes_refuse_what_is_not_an_rgb_image(nodes, coder_vae, stage_a_vaes):
    encode = nodes.images.StageCEncode.execute
    with pytest.raises(ValueError, match="looks like a MASK.*Convert Mask to Image"):
        encode(torch.rand(1, 256, 256), coder_vae)
    with pytest.raises(ValueError, match="4 channels \\(RGBA\\).*Split Image with Alpha"):
        encode(torch.rand(1, 256, 256, 4), coder_vae)
    with pytest.raises(ValueError, match="64x48, smaller than the 256 px"):
        encode(torch.rand(1, 48, 64, 3), coder_vae)
    with pytest.raises(ValueError, match="Stage C Encode \\(Stable Cascade\\): 'vae' got a Stage A VAE, but it needs a Stage C VAE with its EfficientNet encoder"):
        encode(torch.rand(1, 256, 256, 3), stage_a_vaes[0])
    with pytest.raises(ValueError, match="looks like a MASK"):
        nodes.images.StageAEncode.execute(stage_a_vaes[0], torch.rand(1, 64, 64))
    with pytest.raises(ValueError, match="Stage A Encode \\(Stable Cascade\\): 'stage_a' got a Stage C VAE .*, but it needs Stage A"):
        nodes.images.StageAEncode.execute(coder_vae, torch.rand(1, 64, 64, 3))
    with pytest.raises(ValueError, match="Stage A needs at least 8 px"):
        nodes.images.StageAEncode.execute(stage_a_vaes[0], torch.rand(1, 4, 64, 3))


def test_samplers_refuse_a_stage_b_latent_as_stage_c_and_mismatched_batches(nodes):
    model = nodes.loaders.StageCLoader.execute(nodes.paths["stage_c"].name, "fp32").args[0]
    generator = torch.Generator().manual_seed(14)
    caption = [[torch.randn(1, 77, 1280, generator=generator), {"pooled_output": torch.randn(1, 1280, generator=generator)}]]
    args = dict(seed=1, steps=1, cfg=4.0, shift=2.0, cfg_rho=0.7, sampler="ddpm", eta=0.0, denoise=1.0)
    with pytest.raises(ValueError, match="'stage_c' got a Stage B latent .* but it needs a Stage C latent \\(16 channels\\)"):
        nodes.sampling.StageCSampler.execute(model, caption, caption, {"samples": torch.zeros(1, 4, 64, 64)}, **args)
    model_b = nodes.loaders.StageBLoader.execute(nodes.paths["stage_b"].name, "fp32").args[0]
    with pytest.raises(ValueError, match="the Stage C latent has batch size 2 but the latent has 3"):
        nodes.sampling.StageBSampler.execute(model_b, caption, caption, {"samples": torch.zeros(2, 16, 6, 6)},
                                             {"samples": torch.zeros(3, 4, 64, 64)}, **{**args, "cfg": 1.1, "shift": 1.0})
