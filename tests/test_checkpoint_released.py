"""Every released file, from its key/shape list alone: recognised, config inferred, converted keys
equal to the host's modules (built on the meta device with the inferred config)."""
import json

import pytest
import torch

from stable_cascade_pack.stages.checkpoint import describe, extract, identify
from stable_cascade_pack.stages.checkpoint.layouts import apply_key_map, unet_key_map

# Released configs as official.md §2-5 states them (written out here, not imported from the pack).
STAGE_C_BIG = dict(c_in=16, c_out=16, c_r=64, patch_size=1, c_cond=2048, c_hidden=[2048, 2048], nhead=[32, 32],
                   blocks=[[8, 24], [24, 8]], block_repeat=[[1, 1], [1, 1]], level_config=["CTA", "CTA"],
                   c_clip_text=1280, c_clip_text_pooled=1280, c_clip_img=768, c_clip_seq=4, kernel_size=3,
                   dropout=[0.1, 0.1], self_attn=True, t_conds=["sca", "crp"], switch_level=[False])
STAGE_C_LITE = {**STAGE_C_BIG, "c_cond": 1536, "c_hidden": [1536, 1536], "nhead": [24, 24], "blocks": [[4, 12], [12, 4]]}
STAGE_B_BIG = dict(c_in=4, c_out=4, c_r=64, patch_size=2, c_cond=1280, c_hidden=[320, 640, 1280, 1280],
                   nhead=[-1, -1, 20, 20], blocks=[[2, 6, 28, 6], [6, 28, 6, 2]], block_repeat=[[1, 1, 1, 1], [3, 3, 2, 2]],
                   level_config=["CT", "CT", "CTA", "CTA"], c_clip=1280, c_clip_seq=4, c_effnet=16, c_pixels=3,
                   kernel_size=3, dropout=[0, 0, 0.1, 0.1], self_attn=True, t_conds=["sca"])
STAGE_B_LITE = {**STAGE_B_BIG, "c_hidden": [320, 576, 1152, 1152], "nhead": [-1, 9, 18, 18],
                "blocks": [[2, 4, 14, 4], [4, 14, 4, 2]], "block_repeat": [[1, 1, 1, 1], [2, 2, 2, 2]]}

EXPECTED = {
    # reference name: (kind, variant, config or None, description)
    "stage_c_big_3.6B": ("stage_c", "big", STAGE_C_BIG, "Stage C big (3.6B), fp32, original layout"),
    "stage_c_lite_1B": ("stage_c", "lite", STAGE_C_LITE, "Stage C lite (1.0B), fp32, original layout"),
    "stage_b_big_3B(1.5B)": ("stage_b", "big", STAGE_B_BIG, "Stage B big (1.6B), fp32, original layout"),
    "stage_b_lite_700M": ("stage_b", "lite", STAGE_B_LITE, "Stage B lite (0.70B), fp32, original layout"),
    "stage_a": ("stage_a", None, dict(levels=2, bottleneck_blocks=12, c_hidden=384, c_latent=4, codebook_size=8192,
                                      scale_factor=0.43), "Stage A VQGAN (18.4M), fp32, original layout"),
    "effnet_encoder": ("effnet", None, dict(c_latent=16), "EfficientNet encoder (20.2M), fp32, original layout"),
    "previewer": ("previewer", None, dict(c_in=16, c_hidden=512, c_out=3), "Previewer (4.0M), fp32, original layout"),
    "controlnet_canny": ("controlnet", "canny", None, None),
    "controlnet_inpainting": ("controlnet", "inpainting", None, None),
    "controlnet_sr": ("controlnet", "super_resolution", None, None),
    "controlnet_identity": ("controlnet", "identity", None, None),
    "lora_stage_c_3.6B_rank4_attn_1newtoken": ("lora", "original", None, None),
    "lora_stage_c_1B_rank4_attn_1newtoken": ("lora", "original", None, None),
}


@pytest.fixture(scope="module")
def reference(reference_dir):
    return json.loads((reference_dir / "official_state_dict_keys.json").read_text())


def header_of(entry, dtype="fp32"):
    """What read_safetensors_header would return for a released file."""
    return {key: (dtype if key != "embeddings.indices" and not key.endswith("num_batches_tracked") else "int64", tuple(shape))
            for key, shape in entry["keys"].items()}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_released_file_is_recognised_with_its_config(reference, name):
    kind, variant, config, description = EXPECTED[name]
    info = identify(header_of(reference[name]))
    assert (info.kind, info.variant) == (kind, variant)
    assert info.config == config
    if description:
        assert describe(info) == description
    if reference[name].get("n_params"):
        assert info.parameter_count == reference[name]["n_params"]


def test_bf16_file_reports_bf16(reference):
    info = identify(header_of(reference["stage_c_lite_1B"], dtype="bf16"))
    assert describe(info) == "Stage C lite (1.0B), bf16, original layout"


def test_bare_shapes_work_like_a_header(reference):
    shapes = {key: tuple(shape) for key, shape in reference["stage_b_lite_700M"]["keys"].items()}
    assert identify(shapes).config == STAGE_B_LITE


def _host_state_dict_shapes(module_name, class_name, config):
    import importlib

    import comfy.ops

    host_class = getattr(importlib.import_module(module_name), class_name)
    kwargs = {k: v for k, v in config.items() if k != "scale_factor"}  # the host's StageA has no scale_factor
    with torch.device("meta"):
        if class_name in ("StageB", "StageC"):
            model = host_class(**kwargs, operations=comfy.ops.disable_weight_init)
        else:
            model = host_class(**kwargs)
    return {key: tuple(t.shape) for key, t in model.state_dict().items()}


@pytest.mark.parametrize("name,module_name,class_name", [
    ("stage_c_big_3.6B", "comfy.ldm.cascade.stage_c", "StageC"),
    ("stage_c_lite_1B", "comfy.ldm.cascade.stage_c", "StageC"),
    ("stage_b_big_3B(1.5B)", "comfy.ldm.cascade.stage_b", "StageB"),
    ("stage_b_lite_700M", "comfy.ldm.cascade.stage_b", "StageB"),
])
def test_converted_released_unet_matches_host_module(reference, host_modules, name, module_name, class_name):
    """Convert meta tensors of the released shapes: keys and shapes equal the host's module built from the inferred config."""
    meta_state_dict = {key: torch.empty(shape, device="meta") for key, shape in reference[name]["keys"].items()}
    pack_state_dict, config = extract(meta_state_dict, want=EXPECTED[name][0], source_name=name)
    converted = {key: tuple(t.shape) for key, t in pack_state_dict.items()}
    assert converted == _host_state_dict_shapes(module_name, class_name, config)


@pytest.mark.parametrize("name,class_name", [
    ("stage_a", "StageA"), ("previewer", "Previewer"), ("effnet_encoder", "EfficientNetEncoder"),
])
def test_released_vae_parts_match_host_module(reference, host_modules, name, class_name):
    kind = EXPECTED[name][0]
    shapes = {key: tuple(shape) for key, shape in reference[name]["keys"].items()}
    pack_shapes, config = extract(shapes, want=kind, source_name=name)
    module_name = "comfy.ldm.cascade.stage_a" if kind == "stage_a" else "comfy.ldm.cascade.stage_c_coder"
    host_shapes = _host_state_dict_shapes(module_name, class_name, config)
    if kind == "effnet":  # the host registers its input normalisation as buffers; the released file has none
        host_shapes = {k: v for k, v in host_shapes.items() if k not in ("mean", "std")}
    assert pack_shapes == host_shapes


@pytest.mark.parametrize("name", ["stage_c_big_3.6B", "stage_b_lite_700M", "stage_a", "previewer", "effnet_encoder"])
def test_inferred_config_builds_the_packs_own_module(reference, name):
    from stable_cascade_pack.stages.variants import model_class

    class_name = {"stage_c": "StageC", "stage_b": "StageB", "stage_a": "StageA", "previewer": "Previewer",
                  "effnet": "EfficientNetEncoder"}[EXPECTED[name][0]]
    shapes = {key: tuple(shape) for key, shape in reference[name]["keys"].items()}
    pack_shapes, config = extract(shapes, want=EXPECTED[name][0], source_name=name)
    model = model_class(class_name)(**config, device="meta")
    assert pack_shapes == {key: tuple(t.shape) for key, t in model.state_dict().items()}


def test_shape_conversion_equals_tensor_conversion(reference):
    """The header path (shapes) and the weights path (tensors) give the same keys and shapes."""
    keys = reference["stage_c_lite_1B"]["keys"]
    shapes = {key: tuple(shape) for key, shape in keys.items()}
    tensors = {key: torch.empty(shape, device="meta") for key, shape in keys.items()}
    key_map = unet_key_map(keys, "original", "stage_c")
    from_shapes = apply_key_map(shapes, key_map)
    from_tensors = {key: tuple(t.shape) for key, t in apply_key_map(tensors, key_map).items()}
    assert from_shapes == from_tensors
    assert "down_blocks.0.2.attention.attn.to_v.weight" in from_shapes
    assert from_shapes["down_blocks.0.2.attention.attn.to_v.weight"] == (1536, 1536)
