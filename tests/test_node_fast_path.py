"""The opt-in fast path (SCPack_FastPath): compiled through the host's torch.compile wrapper with
static shapes. What it must keep: one compile per input shape (seed, prompt and cfg changes
recompile nothing; a new resolution costs one compile), and the eager path's numbers.

Inductor takes minutes per compile on this 2-core CPU, so these tests hand `apply_fast_path` a
cheap backend (its documented `backend` argument): a recording one that counts the graphs dynamo
compiles, or "aot_eager" (the same ahead-of-time graph capture inductor starts from, run eagerly).
The node itself always uses inductor.
"""
import pytest
import torch

from devtools import standin_models as STANDIN

# Stated tolerances, fp32 on the CPU, as max|fast - eager| / max|eager|: aot_eager runs the same
# aten ops as eager (decomposed: a few reductions are reordered); inductor also fuses kernels and
# picks its own reduction orders. Measured on the tiny stand-ins (1 and 4 steps): aot_eager 0 (Stage C)
# and 3e-7 (Stage B), inductor 4.7e-5 (Stage C).
TOLERANCE = {"aot_eager": 1e-5, "inductor": 2e-4}


def assert_close_to_scale(actual, expected, relative):
    scale = expected.abs().max().item()
    difference = (actual - expected).abs().max().item()
    assert difference <= relative * scale, \
        f"max |fast - eager| = {difference:.3g} exceeds {relative:g} x max |eager| ({scale:.3g})"


@pytest.fixture(scope="module")
def env(host_modules, tmp_path_factory):
    import folder_paths

    models = tmp_path_factory.mktemp("models")
    paths = STANDIN.write_standin_models(models, roles=("stage_c", "stage_b"))
    folder_paths.add_model_folder_path("diffusion_models", str(models / "diffusion_models"), is_default=True)
    from stable_cascade_pack.nodes import fast_path, loaders, sampling

    return {
        "fast_path": fast_path,
        "sampling": sampling,
        "c": loaders.StageCLoader.execute(paths["stage_c"].name, "fp32").args[0],
        "b": loaders.StageBLoader.execute(paths["stage_b"].name, "fp32").args[0],
    }


def conditioning(seed, tokens=8):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, 1280, generator=generator),
             {"pooled_output": torch.randn(1, 1280, generator=generator)}]]


def sample(env, stage, model, *, seed=3, size=4, prompt=1, cfg=None, steps=2):
    common = dict(seed=seed, steps=steps, shift=2.0 if stage == "c" else 1.0, cfg_rho=0.7, sampler="ddpm",
                  eta=0.0, denoise=1.0)
    if stage == "c":
        latent = {"samples": torch.zeros(1, 16, size, size)}
        return env["sampling"].StageCSampler.execute(
            model, conditioning(prompt), conditioning(2), latent, cfg=4.0 if cfg is None else cfg, **common
        ).args[0]["samples"]
    prior = {"samples": torch.randn(1, 16, size, size, generator=torch.Generator().manual_seed(prompt))}
    latent = {"samples": torch.zeros(1, 4, size * 4, size * 4)}
    return env["sampling"].StageBSampler.execute(
        model, conditioning(prompt), conditioning(2), prior, latent, cfg=1.1 if cfg is None else cfg, **common
    ).args[0]["samples"]


class RecordingBackend:
    """A torch.compile backend that runs the captured graph as it is and keeps the input shapes of
    every graph it is handed: one entry per compilation."""

    def __init__(self):
        self.compiled = []
        self.__name__ = "recording"

    def __call__(self, graph_module, example_inputs):
        self.compiled.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return graph_module.forward


def test_the_node_installs_the_hosts_compile_wrapper_on_a_clone(env):
    from comfy.patcher_extension import WrappersMP
    from comfy_api.torch_helpers.torch_compile import COMPILE_KEY

    node = env["fast_path"].FastPath
    model = env["c"]
    patched = node.execute(model, "compile").args[0]
    assert patched is not model and patched.model is model.model
    assert patched.get_wrappers(WrappersMP.APPLY_MODEL, COMPILE_KEY)
    assert not model.get_wrappers(WrappersMP.APPLY_MODEL, COMPILE_KEY)  # the input MODEL is unchanged
    kwargs = patched.model_options["torch_compile_kwargs"]
    assert (kwargs["backend"], kwargs["dynamic"], kwargs["mode"]) == ("inductor", False, None)

    off = node.execute(patched, "off").args[0]
    assert not off.get_wrappers(WrappersMP.APPLY_MODEL, COMPILE_KEY)
    assert "torch_compile_kwargs" not in off.model_options
    assert patched.get_wrappers(WrappersMP.APPLY_MODEL, COMPILE_KEY)  # "off" changed only its own clone


def test_cuda_graphs_fall_back_to_plain_compile_off_cuda_and_say_so(env):
    patched, note = env["fast_path"].apply_fast_path(env["c"], "cuda graphs", backend="aot_eager")
    assert patched.model_options["torch_compile_kwargs"]["mode"] is None
    assert "need a CUDA device" in note and "'cpu'" in note and "fell back to plain compile" in note


def test_bad_input_is_refused_by_name(env):
    with pytest.raises(ValueError, match="expected one of"):
        env["fast_path"].apply_fast_path(env["c"], "turbo")

    class NotCascade:
        model = object()

    with pytest.raises(ValueError, match="not a Stable Cascade Stage B or C model"):
        env["fast_path"].FastPath.execute(NotCascade(), "compile")


@pytest.mark.parametrize("stage", ["c", "b"])
def test_seed_prompt_and_cfg_recompile_nothing_a_new_size_compiles_once(env, stage):
    torch._dynamo.reset()
    backend = RecordingBackend()
    fast, _ = env["fast_path"].apply_fast_path(env[stage], "compile", backend=backend)

    first = sample(env, stage, fast)
    assert len(backend.compiled) == 1, f"expected one graph (no graph breaks), got {len(backend.compiled)}"
    cfg = 5.0 if stage == "c" else 1.5
    other = sample(env, stage, fast, seed=11, prompt=7, cfg=cfg)
    assert len(backend.compiled) == 1, "a new seed, prompt or cfg recompiled the network"
    assert not torch.equal(first, other)  # they did change the inputs

    sample(env, stage, fast, size=6)
    assert len(backend.compiled) == 2, "a new resolution must cost exactly one compile"
    assert backend.compiled[1] != backend.compiled[0]
    sample(env, stage, fast, seed=12)
    assert len(backend.compiled) == 2, "going back to the first resolution recompiled"


@pytest.mark.parametrize("stage,backend", [("c", "aot_eager"), ("b", "aot_eager"), ("c", "inductor")])
def test_fast_path_equals_the_eager_path_for_one_step_and_a_whole_run(env, stage, backend):
    """One step (steps=1: the result is the first x0, one network call) and a 4-step run. inductor,
    the node's own backend, once: its first compile takes 20 s to 2 minutes here."""
    torch._dynamo.reset()
    fast, _ = env["fast_path"].apply_fast_path(env[stage], "compile", backend=backend)
    for steps in (1, 4):
        eager = sample(env, stage, env[stage], steps=steps)
        compiled = sample(env, stage, fast, steps=steps)
        assert torch.isfinite(compiled).all() and compiled.abs().max() > 0
        assert_close_to_scale(compiled, eager, TOLERANCE[backend])


def test_off_after_compile_runs_eager_bit_for_bit(env):
    backend = RecordingBackend()
    compiled, _ = env["fast_path"].apply_fast_path(env["c"], "compile", backend=backend)
    off, _ = env["fast_path"].apply_fast_path(compiled, "off")
    torch._dynamo.reset()
    result = sample(env, "c", off)
    assert backend.compiled == []
    assert torch.equal(result, sample(env, "c", env["c"]))


class RecordingNetwork(torch.nn.Module):
    """Stands in for the network: the same module, keeping what each call was handed."""

    def __init__(self, network):
        super().__init__()
        self.network, self.calls = network, []

    def forward(self, x, r, **conditions):
        self.calls.append({name: (value.dtype, value.data_ptr()) for name, value in conditions.items()
                           if isinstance(value, torch.Tensor)})
        return self.network(x, r, **conditions)


def test_the_loop_hands_the_network_the_same_condition_tensors_every_step(env, monkeypatch):
    """No per-step host work on the conditions: cast and moved once, the very same tensors each step.
    The network computes in bf16 here (as on a GPU), so a per-step cast would make new tensors."""
    from comfy.patcher_extension import WrappersMP
    from comfy_api.torch_helpers.torch_compile import COMPILE_KEY, apply_torch_compile_factory
    from stable_cascade_pack.nodes import loaders

    model = loaders.StageCLoader.execute("stage_c_bf16.safetensors", "bf16").args[0].clone()
    monkeypatch.setattr(model.model, "manual_cast_dtype", None)  # the CPU would compute in fp32
    recording = RecordingNetwork(model.get_model_object("diffusion_model"))
    # The host's compile wrapper is the documented way to swap the module the sampler calls.
    model.add_wrapper_with_key(WrappersMP.APPLY_MODEL, COMPILE_KEY, apply_torch_compile_factory({"diffusion_model": recording}))
    sample(env, "c", model, steps=3)
    compute_dtype = model.model.manual_cast_dtype or model.model.get_dtype()
    assert compute_dtype == torch.bfloat16
    assert len(recording.calls) == 3
    assert recording.calls[0].keys() >= {"clip_text", "clip_text_pooled", "clip_img"}
    assert all(dtype == compute_dtype for dtype, _ in recording.calls[0].values())
    assert all(call == recording.calls[0] for call in recording.calls[1:])
