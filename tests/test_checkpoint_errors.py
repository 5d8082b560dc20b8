"""Wrong or broken files: each message names the file, what it is, and which loader takes it."""
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from stable_cascade_pack.stages.checkpoint import (CheckpointError, describe, extract, identify, load_checkpoint,
                                                   read_safetensors_header)


@pytest.fixture(scope="module")
def reference(reference_dir):
    return json.loads((reference_dir / "official_state_dict_keys.json").read_text())


def shapes(reference, name, prefix=""):
    return {prefix + key: tuple(shape) for key, shape in reference[name]["keys"].items()}


def error_for(state_dict, want, source_name):
    with pytest.raises(CheckpointError) as raised:
        extract(state_dict, want=want, source_name=source_name)
    return str(raised.value)


def test_stage_b_in_stage_c_loader(reference):
    message = error_for(shapes(reference, "stage_b_lite_700M"), "stage_c", "stage_b_lite.safetensors")
    assert message == ("stage_b_lite.safetensors is a Stage B (lite, 0.70B) checkpoint, but the Stage C loader needs "
                       "a Stage C file (stage_c*.safetensors). Load it with 'Load Stage B Decoder (Stable Cascade)' instead.")


def test_stage_c_in_stage_b_loader(reference):
    message = error_for(shapes(reference, "stage_c_big_3.6B"), "stage_b", "stage_c_bf16.safetensors")
    assert "stage_c_bf16.safetensors is a Stage C (big, 3.6B) checkpoint" in message
    assert "Stage B loader needs a Stage B file" in message and "'Load Stage C Prior (Stable Cascade)'" in message


@pytest.mark.parametrize("name", ["lora_stage_c_3.6B_rank4_attn_1newtoken"])
def test_original_lora_in_unet_loader(reference, name):
    message = error_for(shapes(reference, name), "stage_c", "lora_fernando_10k.safetensors")
    assert message.startswith("lora_fernando_10k.safetensors is a LoRA (original StableCascade training format)")
    assert "Load it with 'Load Stage C LoRA (Stable Cascade)'" in message


def test_comfyui_style_lora_is_recognised():
    lora = {"lora_prior_unet_down_blocks_0_2_attention_attn_to_q.lora_down.weight": (4, 64),
            "lora_prior_unet_down_blocks_0_2_attention_attn_to_q.lora_up.weight": (64, 4)}
    assert (identify(lora).kind, identify(lora).variant) == ("lora", "comfyui")
    assert "is a LoRA (ComfyUI/kohya key format)" in error_for(lora, "stage_b", "my_lora.safetensors")


@pytest.mark.parametrize("name,variant", [("controlnet_canny", "canny"), ("controlnet_sr", "super_resolution")])
def test_controlnet_in_unet_loader(reference, name, variant):
    message = error_for(shapes(reference, name), "stage_c", f"{variant}.safetensors")
    assert f"{variant}.safetensors is a Stable Cascade ControlNet ({variant}," in message
    assert "Load ControlNet (Stable Cascade)" in message


def test_text_encoder_in_unet_loader():
    text_encoder = {"text_model.encoder.layers.0.self_attn.q_proj.weight": (1280, 1280),
                    "text_model.embeddings.token_embedding.weight": (49408, 1280)}
    message = error_for(text_encoder, "stage_c", "model.safetensors")
    assert message.startswith("model.safetensors is a text encoder")
    assert "'Load CLIP' node with type 'stable_cascade'" in message


@pytest.mark.parametrize("name,what", [("stage_a", "Stage A VQGAN"), ("effnet_encoder", "EfficientNet encoder"),
                                       ("previewer", "Previewer")])
def test_vae_file_in_unet_loader(reference, name, what):
    message = error_for(shapes(reference, name), "stage_b", f"{name}.safetensors")
    assert message.startswith(f"{name}.safetensors is a{'n' if what[0] == 'E' else ''} {what} (")
    assert "Stage B loader needs a Stage B file" in message and "'Load " in message


def test_unet_in_vae_loader(reference):
    message = error_for(shapes(reference, "stage_c_lite_1B"), "stage_a", "stage_c_lite.safetensors")
    assert "is a Stage C (lite, 1.0B) checkpoint, but the Stage A loader needs a Stage A file" in message


@pytest.mark.parametrize("keys,family", [
    ({"input_blocks.0.0.weight": (320, 4, 3, 3), "out.2.weight": (4, 320, 3, 3)}, "SD1.x/SD2.x-style UNet"),
    ({"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
      "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
      "first_stage_model.decoder.conv_in.weight": (512, 4, 3, 3)}, "SDXL-style UNet"),
])
def test_non_cascade_unet(keys, family):
    message = error_for(keys, "stage_c", "sd_xl_base_1.0.safetensors")
    assert message.startswith(f"sd_xl_base_1.0.safetensors is an {family} (")
    assert "not Stable Cascade" in message and "'Load Checkpoint'" in message


def test_bundled_file_without_the_requested_network(reference):
    bundle = shapes(reference, "stage_b_lite_700M", "model.diffusion_model.") | shapes(reference, "stage_a", "vae.")
    message = error_for(bundle, "stage_c", "stable_cascade_stage_b.safetensors")
    assert message.startswith("stable_cascade_stage_b.safetensors is a ComfyUI bundled Stage B checkpoint "
                              "(Stage B (lite, 0.70B), Stage A VQGAN (18.4M)); it holds no Stage C")
    assert "'Load Stage B Decoder (Stable Cascade)'" in message
    assert "holds no EfficientNet encoder" in error_for(bundle, "effnet", "stable_cascade_stage_b.safetensors")


def test_unknown_file(tmp_path):
    message = error_for({"foo.weight": (3, 3)}, "stage_c", "mystery.safetensors")
    assert "mystery.safetensors is an unrecognised checkpoint" in message and "no known Stable Cascade layout" in message


def test_empty_state_dict_and_empty_file(tmp_path):
    assert "holds no tensors" in error_for({}, "stage_c", "nothing.safetensors")
    assert identify({}).kind == "empty" and describe(identify({})) == "empty checkpoint (no tensors)"
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.safetensors is empty \(0 bytes\)"):
        read_safetensors_header(empty)
    no_tensors = tmp_path / "no_tensors.safetensors"
    save_file({}, str(no_tensors))
    with pytest.raises(CheckpointError, match="no_tensors.safetensors holds no tensors"):
        load_checkpoint(no_tensors, want="stage_b")


def test_truncated_and_corrupt_files(tmp_path):
    good = tmp_path / "stage_b_lite.safetensors"
    save_file({"a": torch.zeros(64, 64), "b": torch.zeros(3)}, str(good))
    data = good.read_bytes()
    assert read_safetensors_header(good) == {"a": ("fp32", (64, 64)), "b": ("fp32", (3,))}

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match=r"truncated.safetensors is truncated: .* Download it again"):
        read_safetensors_header(truncated)
    short_header = tmp_path / "cut_in_header.safetensors"
    short_header.write_bytes(data[:20])
    with pytest.raises(CheckpointError, match="cut_in_header.safetensors is truncated"):
        read_safetensors_header(short_header)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\0" * 16)
    with pytest.raises(CheckpointError, match="garbage.safetensors is corrupt"):
        read_safetensors_header(garbage)
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"PK\x03\x04" + b"\xff" * 60)
    with pytest.raises(CheckpointError, match="model.ckpt is not a safetensors file"):
        read_safetensors_header(pickle)


def test_wrong_file_is_refused_from_the_header_before_weights_are_read(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "previewer.safetensors"
    save_file({"blocks.0.weight": torch.zeros(8, 16, 1, 1), "blocks.24.weight": torch.zeros(3, 8, 1, 1)}, str(path))

    def fail(*args, **kwargs):
        raise AssertionError("weights were read")

    monkeypatch.setattr(safetensors.torch, "load_file", fail)
    with pytest.raises(CheckpointError, match="previewer.safetensors is a Previewer"):
        load_checkpoint(path, want="stage_c")


def test_describe_texts(reference):
    header = {key: ("bf16", shape) for key, shape in shapes(reference, "stage_c_lite_1B").items()}
    assert describe(identify(header)) == "Stage C lite (1.0B), bf16, original layout"
    host = extract(shapes(reference, "stage_b_big_3B(1.5B)"), want="stage_b")[0]
    assert describe(identify(host)) == "Stage B big (1.6B), ComfyUI layout"
    bundle = shapes(reference, "stage_c_big_3.6B", "model.diffusion_model.") | shapes(reference, "previewer", "vae.previewer.")
    assert describe(identify(bundle)).startswith("ComfyUI bundled Stage C checkpoint (Stage C (big, 3.6B), Stage C VAE")
