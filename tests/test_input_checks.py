"""Every node input checks what it receives, in-process with the host's modules and tiny stand-ins.

The same mistakes through the real server are in test_host_wrong_inputs.py; here each check's
message and each fallback is pinned down without starting one.
"""
import logging
import math

import pytest
import torch
from conftest import seeded_random

from devtools import standin_models

STANDIN = standin_models


@pytest.fixture(scope="module")
def pack(host_modules, tmp_path_factory):
    import folder_paths

    models = tmp_path_factory.mktemp("models")
    paths = STANDIN.write_standin_models(models)
    for folder in ("diffusion_models", "vae"):
        folder_paths.add_model_folder_path(folder, str(models / folder), is_default=True)
    from stable_cascade_pack.nodes import input_checks, latents, loaders, memory_limits, previews, sampling

    names = {role: path.name for role, path in paths.items()}
    models = {
        "c": loaders.StageCLoader.execute(names["stage_c"], "fp32").args[0],
        "b": loaders.StageBLoader.execute(names["stage_b"], "fp32").args[0],
        "stage_a": loaders.StageALoader.execute(names["stage_a"]).args[0],
        "previewer": loaders.StageCCoderLoader.execute("none", names["previewer"]).args[0],
        "encoder_only": loaders.StageCCoderLoader.execute(names["effnet"], "none").args[0],
    }
    return dict(checks=input_checks, latents=latents, loaders=loaders, sampling=sampling, previews=previews,
                memory_limits=memory_limits, models=models, names=names)


def conditioning(width=1280, pooled=1280, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 8, width, generator=generator), {"pooled_output": torch.randn(1, pooled, generator=generator)}]]


ARGS = dict(seed=1, steps=1, cfg=4.0, shift=2.0, cfg_rho=0.7, sampler="ddpm", eta=0.0, denoise=1.0)
C_LATENT = {"samples": torch.zeros(1, 16, 6, 6)}
B_LATENT = {"samples": torch.zeros(1, 4, 32, 32)}


def run_stage_c(pack, model=None, latent=C_LATENT, positive=None, **overrides):
    return pack["sampling"].StageCSampler.execute(model or pack["models"]["c"], positive or conditioning(), conditioning(seed=1),
                                                  latent, **{**ARGS, **overrides})


def run_stage_b(pack, model=None, stage_c=C_LATENT, stage_b=B_LATENT, positive=None, **overrides):
    return pack["sampling"].StageBSampler.execute(model or pack["models"]["b"], positive or conditioning(), conditioning(seed=1),
                                                  stage_c, stage_b, **{**ARGS, "cfg": 1.1, "shift": 1.0, **overrides})


@pytest.mark.parametrize("name", ["cfg", "shift", "cfg_rho", "eta", "denoise"])
def test_every_float_input_of_both_samplers_must_be_finite(pack, name):
    for value in (math.nan, math.inf):
        with pytest.raises(pack["checks"].WrongInput, match=rf"Stage C Prior Sampler \(Stable Cascade\): '{name}' is {value}"):
            run_stage_c(pack, **{name: value})
        with pytest.raises(pack["checks"].WrongInput, match=rf"Stage B Sampler \(Stable Cascade\): '{name}' is {value}"):
            run_stage_b(pack, **{name: value})


# (what goes wrong, call, pattern the message must match): each wrong kind of value the graph can deliver.
WIRING_MISTAKES = [
    ("Stage C latent into stage_b", lambda p: run_stage_b(p, stage_b=C_LATENT),
     r"Stage B Sampler \(Stable Cascade\): 'stage_b' got a Stage C latent \[1, 16, 6, 6\], but it needs a Stage B latent.*'Empty Latents \(Stable Cascade\)'"),
    ("Stage B latent into stage_c of Stage B", lambda p: run_stage_b(p, stage_c=B_LATENT),
     r"'stage_c' got a Stage B latent .*\[1, 4, 32, 32\], but it needs a Stage C latent \(16 channels\)"),
    ("Stage B latent into Stage C", lambda p: run_stage_c(p, latent=B_LATENT),
     r"Stage C Prior Sampler \(Stable Cascade\): 'stage_c' got a Stage B latent"),
    ("video latent into Stage C", lambda p: run_stage_c(p, latent={"samples": torch.zeros(1, 16, 2, 6, 6)}),
     r"'stage_c' got a 5-D latent \[1, 16, 2, 6, 6\] \(a video or audio latent\?\)"),
    ("odd Stage B latent", lambda p: run_stage_b(p, stage_b={"samples": torch.zeros(1, 4, 33, 32)}),
     r"'stage_b' got a latent of 33x32, but it needs .*multiples of 2"),
    ("NaN latent", lambda p: run_stage_c(p, latent={"samples": torch.full((1, 16, 6, 6), math.nan)}),
     r"'stage_c' holds NaN or infinite values: the node that made it failed"),
    ("Stage B model in Stage C", lambda p: run_stage_c(p, model=p["models"]["b"]),
     r"'model' got a Stage B model, but it needs a Stage C model. Connect 'Load Stage C Prior \(Stable Cascade\)'"),
    ("Stage C model in Stage B", lambda p: run_stage_b(p, model=p["models"]["c"]),
     r"'model' got a Stage C model, but it needs a Stage B model. Connect 'Load Stage B Decoder \(Stable Cascade\)'"),
    ("SD1 CLIP into Stage B", lambda p: run_stage_b(p, positive=conditioning(768, 768)),
     r"'positive' has 768-wide pooled text embeddings but Stage B needs 1280-wide ones.*'stable_cascade'"),
    ("SD1 CLIP into Stage C", lambda p: run_stage_c(p, positive=conditioning(768, 768)),
     r"'positive' has 768-wide text embeddings but Stage C needs 1280-wide ones"),
    ("Stage C VAE into Stage A Decode", lambda p: p["latents"].StageADecode.execute(p["models"]["previewer"], B_LATENT),
     r"Stage A Decode \(Stable Cascade\): 'stage_a' got a Stage C VAE \(EfficientNet encoder / Previewer\), but it needs Stage A.*'Load Stage A VAE \(Stable Cascade\)'"),
    ("Stage C latent into Stage A Decode", lambda p: p["latents"].StageADecode.execute(p["models"]["stage_a"], C_LATENT),
     r"Stage A Decode \(Stable Cascade\): 'stage_b' got a Stage C latent \[1, 16, 6, 6\], but it needs a Stage B latent"),
    ("a weight dtype no loader offers", lambda p: p["loaders"].StageCLoader.execute(p["names"]["stage_c"], "fp64"),
     r"Load Stage C Prior \(Stable Cascade\): weight_dtype: 'fp64' is not one of the choices"),
]


@pytest.mark.parametrize("mistake,call,pattern", WIRING_MISTAKES, ids=[m[0] for m in WIRING_MISTAKES])
def test_wiring_mistakes_get_the_packs_message(pack, mistake, call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(pack)


def test_nan_weights_stop_sampling_at_the_first_step_and_blame_the_file(pack):
    import copy

    broken = copy.deepcopy(pack["models"]["c"])
    with torch.no_grad():
        broken.model.diffusion_model.clf[1].weight[0, 0] = math.nan
    with pytest.raises(pack["checks"].NonFiniteResult, match=r"step 1 of 3 gave NaN.*weights hold NaN.*clf\.1\.weight.*corrupt"):
        run_stage_c(pack, model=broken, steps=3)


def test_a_decoded_picture_with_nan_is_refused(pack):
    stage_a = pack["models"]["stage_a"]
    weight = [p for p in stage_a.first_stage_model.parameters() if p.dim() == 4][-1]  # the output conv
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight[0, 0, 0, 0] = math.nan
        with pytest.raises(pack["checks"].NonFiniteResult, match=r"Stage A Decode \(Stable Cascade\): the decoded image holds NaN .*Stage A file is corrupt"):
            pack["latents"].StageADecode.execute(stage_a, B_LATENT)
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_previews_fall_back_instead_of_failing(pack, caplog):
    previews, models = pack["previews"], pack["models"]
    with caplog.at_level(logging.WARNING):
        for wrong in (models["stage_a"], models["encoder_only"]):
            caplog.clear()
            # Previews are off in this process (no --preview-method), so the fallback is no preview.
            assert previews.make_preview_fn(models["c"], wrong) is None
            assert "previews fall back to ComfyUI's own" in caplog.text

    class Broken:
        """A previewer VAE that passes the kind check but whose decode raises."""

        first_stage_model = models["previewer"].first_stage_model
        device = torch.device("cpu")
        vae_dtype = torch.float32

        def memory_used_decode(self, shape, dtype):
            return 1

        def decode(self, latent):
            raise RuntimeError("corrupt previewer")

    with caplog.at_level(logging.WARNING):
        caplog.clear()
        preview = previews.make_preview_fn(models["c"], Broken())
        preview(torch.zeros(1, 16, 6, 6))
        preview(torch.zeros(1, 16, 6, 6))
        assert caplog.text.count("the Previewer failed (RuntimeError: corrupt previewer)") == 1
    result = run_stage_c(pack, preview_vae=models["stage_a"])  # the whole sampling still succeeds
    assert torch.isfinite(result.args[0]["samples"]).all()


def test_a_working_previewer_still_previews(pack):
    preview = pack["previews"].make_preview_fn(pack["models"]["c"], pack["models"]["previewer"])
    kind, image, _ = preview(torch.zeros(1, 16, 6, 6))
    assert kind == "JPEG" and image.size[0] > 0


def test_sizes_beyond_the_memory_are_refused_with_one_that_fits(pack, monkeypatch):
    limits = pack["memory_limits"]
    model = pack["models"]["b"]
    shape = (1, 4, 256, 256)  # a 1024x1024 picture
    needed = limits.sampling_bytes(model.model.diffusion_model, "b", shape, 4)
    monkeypatch.setattr(limits, "budget_bytes", lambda device: needed / 4)
    with pytest.raises(limits.TooLarge, match=r"Stage B Sampler \(Stable Cascade\): Stage B sampling at about 1024x1024 .* is available on this machine. "
                                              r"The largest picture that fits is about 512x512"):
        run_stage_b(pack, stage_b={"samples": torch.zeros(shape)})
    with pytest.raises(limits.TooLarge, match=r"Empty Latents \(Stable Cascade\): .* largest picture that fits"):
        monkeypatch.setattr(limits, "budget_bytes", lambda device: 1000)
        pack["latents"].EmptyLatent.execute(1024, 1024, 1)
    half = limits.sampling_bytes(model.model.diffusion_model, "b", (1, 4, 128, 128), 4)
    assert half <= needed / 4 * 1.01


def test_decoding_beyond_the_memory_goes_in_tiles(pack, monkeypatch):
    limits, stage_a = pack["memory_limits"], pack["models"]["stage_a"]
    latent = torch.randn(1, 4, 96, 96, generator=torch.Generator().manual_seed(0)) * 0.5
    whole = pack["latents"].StageADecode.execute(stage_a, {"samples": latent}).args[0]
    needed = stage_a.memory_used_decode(latent.shape, stage_a.vae_dtype)
    monkeypatch.setattr(limits, "budget_bytes", lambda device: needed / 2)
    tiled = pack["latents"].StageADecode.execute(stage_a, {"samples": latent}).args[0]
    assert tiled.shape == whole.shape == (1, 384, 384, 3)
    assert (tiled - whole).abs().mean() < 0.05  # same picture; only the tile seams blend differently
    monkeypatch.setattr(limits, "budget_bytes", lambda device: 1000)
    with pytest.raises(limits.TooLarge, match=r"Stage A Decode \(Stable Cascade\): a 384x384 picture .* even when decoded in tiles"):
        pack["latents"].StageADecode.execute(stage_a, {"samples": latent})


def test_attention_in_query_chunks_gives_the_same_numbers(monkeypatch, host_modules):
    from stable_cascade_pack.stages import blocks

    attention = seeded_random(blocks.MultiHeadAttention(64, 2), 3)
    queries = torch.randn(2, 300, 64, generator=torch.Generator().manual_seed(1))
    keys = torch.randn(2, 310, 64, generator=torch.Generator().manual_seed(2))
    whole = attention(queries, keys)
    calls = []
    attention.core.register_forward_pre_hook(lambda module, inputs: calls.append(inputs[0].shape[2]))
    monkeypatch.setattr(blocks, "MAX_SCORES_PER_CALL", 2 * 2 * 310 * 64)
    chunked = attention(queries, keys)
    assert calls == [64, 64, 64, 64, 44]
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)


def test_an_interrupt_lands_inside_a_network_call(pack):
    import comfy.model_management as mm

    network = pack["models"]["c"].model.diffusion_model
    calls = []
    hook = network.clf.register_forward_pre_hook(lambda *_: calls.append(1))
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_stage_c(pack, steps=1)  # the first module call raises, long before the last layer
    finally:
        mm.interrupt_current_processing(False)
        hook.remove()
    assert calls == []
    assert not any(module._forward_pre_hooks for module in network.modules() if module is not network.clf)


def test_an_interrupt_lands_inside_a_stage_a_decode(pack):
    import comfy.model_management as mm

    stage_a = pack["models"]["stage_a"]
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            pack["latents"].StageADecode.execute(stage_a, B_LATENT)
    finally:
        mm.interrupt_current_processing(False)
    assert not any(module._forward_pre_hooks for module in stage_a.first_stage_model.modules())
    assert pack["latents"].StageADecode.execute(stage_a, B_LATENT).args[0].shape == (1, 128, 128, 3)


def test_on_a_gpu_the_budget_is_the_whole_card_not_its_free_memory(pack, monkeypatch):
    """The host unloads Stage C to make room for Stage B: a full card must not refuse a size."""
    import comfy.model_management as mm

    limits = pack["memory_limits"]
    monkeypatch.setattr(mm, "get_free_memory", lambda device=None, torch_free_too=False: 1 * 2**30)
    monkeypatch.setattr(mm, "get_total_memory", lambda device=None, torch_total_too=False: 24 * 2**30)
    assert limits.budget_bytes(torch.device("cuda", 0)) == pytest.approx(24 * 2**30 * limits.BUDGET_SHARE)
    assert limits.budget_bytes(torch.device("cpu")) == pytest.approx(1 * 2**30 * limits.BUDGET_SHARE)
