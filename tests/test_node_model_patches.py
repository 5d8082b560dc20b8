"""The host's model patches in our GDF samplers: applied exactly (weights, torch.compile) or refused
by name (anything written for the host's sigma/denoised convention or its CFG), never dropped."""
import pytest
import torch

from devtools import standin_models as STANDIN


@pytest.fixture(scope="module")
def env(host_modules, tmp_path_factory):
    import folder_paths

    models = tmp_path_factory.mktemp("models")
    paths = STANDIN.write_standin_models(models)
    folder_paths.add_model_folder_path("diffusion_models", str(models / "diffusion_models"), is_default=True)
    from stable_cascade_pack.nodes import loaders, sampling

    model = loaders.StageCLoader.execute(paths["stage_c"].name, "fp32").args[0]
    return {"sampling": sampling, "model": model}


def conditioning(seed):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 8, 1280, generator=generator), {"pooled_output": torch.randn(1, 1280, generator=generator)}]]


def sample_c(env, model, shift=2.0):
    latent = {"samples": torch.zeros(1, 16, 4, 4)}
    return env["sampling"].StageCSampler.execute(
        model, conditioning(1), conditioning(2), latent, seed=3, steps=2, cfg=4.0, shift=shift, cfg_rho=0.7,
        sampler="ddpm", eta=0.0, denoise=1.0).args[0]["samples"]


class CountingModule(torch.nn.Module):
    """Stands in for a compiled network: the same module, with a count of its calls."""

    def __init__(self, network):
        super().__init__()
        self.network, self.calls = network, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.network(*args, **kwargs)


def test_the_host_torch_compile_wrapper_runs_the_compiled_network_with_the_same_numbers(env):
    from comfy.patcher_extension import WrappersMP
    from comfy_api.torch_helpers.torch_compile import COMPILE_KEY, apply_torch_compile_factory

    plain = sample_c(env, env["model"])
    patched = env["model"].clone()
    counting = CountingModule(patched.get_model_object("diffusion_model"))
    patched.add_wrapper_with_key(WrappersMP.APPLY_MODEL, COMPILE_KEY,
                                 apply_torch_compile_factory({"diffusion_model": counting}))
    via_wrapper = sample_c(env, patched)
    assert counting.calls == 2  # one call per step (cond and uncond batched)
    assert torch.equal(plain, via_wrapper)
    assert patched.model.diffusion_model is counting.network  # swapped back after each call


def test_torch_compile_model_node_compiles_what_our_sampler_runs(env):
    """The host's own set_torch_compile_wrapper (what TorchCompileModel calls) with a backend that
    records the graphs dynamo hands it: our sampler must run through the compiled module."""
    from comfy_api.torch_helpers.torch_compile import set_torch_compile_wrapper

    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    patched = env["model"].clone()
    set_torch_compile_wrapper(patched, backend=recording_backend)
    compiled = sample_c(env, patched)
    assert graphs, "the compiled network never ran"
    torch.testing.assert_close(compiled, sample_c(env, env["model"]), rtol=1e-5, atol=1e-5)


def refusal(env, model, shift=2.0):
    from stable_cascade_pack.nodes.model_patches import UnsupportedModelPatch

    with pytest.raises(UnsupportedModelPatch) as caught:
        sample_c(env, model, shift=shift)
    message = str(caught.value)
    assert message.startswith("Stage C Prior Sampler (Stable Cascade): the MODEL carries patches")
    return message


def test_patches_in_the_hosts_sigma_convention_are_refused_by_name(env):
    from comfy.patcher_extension import WrappersMP

    model = env["model"].clone()
    model.set_model_unet_function_wrapper(lambda apply_model, args: apply_model(args["input"], args["timestep"], **args["c"]))
    assert "model_function_wrapper" in refusal(env, model)

    model = env["model"].clone()
    model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "some_pack", lambda executor, *a, **k: executor(*a, **k))
    assert "'diffusion_model' wrapper ('some_pack')" in refusal(env, model)

    model = env["model"].clone()
    model.set_model_attn1_patch(lambda q, k, v, extra_options: (q, k, v))
    assert "attention patches (attn1_patch)" in refusal(env, model)


def test_host_cfg_nodes_are_refused(env):
    import comfy_extras.nodes_model_advanced as advanced

    rescaled = advanced.RescaleCFG().patch(env["model"], 0.7)[0]
    assert "sampler_cfg_function" in refusal(env, rescaled)


def test_a_model_sampling_shift_must_agree_with_the_samplers(env):
    import comfy_extras.nodes_model_advanced as advanced

    shifted = advanced.ModelSamplingStableCascade().patch(env["model"], 3.0)[0]
    message = refusal(env, shifted, shift=2.0)
    assert "shift 3.0" in message and "set the sampler's shift to 3.0" in message
    assert torch.equal(sample_c(env, shifted, shift=3.0), sample_c(env, env["model"], shift=3.0))
