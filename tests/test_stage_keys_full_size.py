"""Every released variant, built on the meta device, has exactly the released file's keys and shapes
(after converting our attention layout back to the original one)."""
import json

import pytest
import torch

from stable_cascade_pack.stages.checkpoint.layouts import convert_state_dict
from stable_cascade_pack.stages.variants import RELEASED_CONFIGS, build_released

# our variant name -> entry in reference/official_state_dict_keys.json
REFERENCE_NAMES = {
    "stage_a": "stage_a",
    "stage_b_big": "stage_b_big_3B(1.5B)",
    "stage_b_lite": "stage_b_lite_700M",
    "stage_c_big": "stage_c_big_3.6B",
    "stage_c_lite": "stage_c_lite_1B",
    "effnet_encoder": "effnet_encoder",
    "previewer": "previewer",
}


@pytest.fixture(scope="module")
def reference_keys(reference_dir):
    return json.loads((reference_dir / "official_state_dict_keys.json").read_text())


def test_every_released_variant_is_covered():
    assert set(RELEASED_CONFIGS) == set(REFERENCE_NAMES)


@pytest.mark.parametrize("name", sorted(REFERENCE_NAMES))
def test_released_variant_keys_and_shapes(name, reference_keys):
    expected = reference_keys[REFERENCE_NAMES[name]]
    model = build_released(name, device="meta")
    ours = {key: list(tensor.shape) for key, tensor in convert_state_dict(model.state_dict(), "pack", "original").items()}
    assert ours == expected["keys"]
    params = sum(p.numel() for p in model.parameters())
    assert params == expected["n_params"]


@pytest.mark.parametrize("name", ["stage_b_lite", "stage_c_lite"])
def test_original_file_loads_strictly_after_conversion(name, reference_keys):
    expected = reference_keys[REFERENCE_NAMES[name]]["keys"]
    original = {key: torch.empty(shape, device="meta") for key, shape in expected.items()}
    model = build_released(name, device="meta")
    model.load_state_dict(convert_state_dict(original, "original", "pack"), strict=True, assign=True)
