"""The stand-in CLIP-G file is what the host's `stable_cascade` CLIP loader expects (in-process)."""
import gc

import torch


def test_host_loads_the_standin_as_stable_cascade_clip_g(host_modules, clip_g_standin_path):
    import comfy.sd
    import comfy.sdxl_clip
    from safetensors import safe_open

    with safe_open(str(clip_g_standin_path), framework="pt") as f:
        file_keys = set(f.keys())
    assert comfy.sd.detect_te_model(dict.fromkeys(file_keys)) == comfy.sd.TEModel.CLIP_G
    clip = comfy.sd.load_clip(ckpt_paths=[str(clip_g_standin_path)],
                              clip_type=comfy.sd.CLIPType.STABLE_CASCADE)
    try:
        assert isinstance(clip.cond_stage_model, comfy.sdxl_clip.StableCascadeClipModel)
        # every weight of the host's model comes from the file (no random init left behind)
        prefix = "clip_g.transformer."
        model_keys = {k[len(prefix):] for k in clip.cond_stage_model.state_dict() if k.startswith(prefix)}
        assert model_keys - file_keys <= {"text_model.embeddings.position_ids"}, \
            sorted(model_keys - file_keys)[:10]

        # the host's own CLIPTextEncode node, as a workflow runs it
        import nodes

        (conditioning,) = nodes.CLIPTextEncode().encode(clip, "a photo of a cat")
        ((cond, extras),) = conditioning
        assert cond.shape == (1, 77, 1280)
        assert extras["pooled_output"].shape == (1, 1280)
        assert torch.isfinite(cond).all() and torch.isfinite(extras["pooled_output"]).all()
        assert 0 < cond.abs().max() < 1e3  # random weights of modest scale: no blow-up in 32 layers
    finally:
        del clip
        gc.collect()


def test_server_offers_the_standin_to_clip_loader(host_server, host_clip_g):
    """add_model() makes a file visible to the running host at once (its listing cache is keyed
    on the folder's mtime)."""
    options = host_server.object_info("CLIPLoader")["input"]["required"]["clip_name"][0]
    assert host_clip_g in options
    assert "stable_cascade" in host_server.object_info("CLIPLoader")["input"]["required"]["type"][0]
