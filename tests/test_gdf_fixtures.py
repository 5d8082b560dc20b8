"""Whole sampling trajectories against the original GDF (fixtures/gdf/<case>), README section 2.

The fixtures were made on another CPU. On this one our loop is bit-identical to the original code,
but the original's own numbers differ from the stored ones by ulps of cos/log/tanh and of the
std reduction, which twenty steps grow to ~1e-6 (x_t, eps, result) and, divided by a ~ 0.01 at
the first step, ~1e-5 on x0. Hence: x_t, eps, result atol 2e-5; x0 compared as a * x0 (the part
that enters x_t), atol 2e-5. Noise draws are bit-identical on x86 with AVX2/AVX-512; torch's CPU
randn uses another Box-Muller code path without them (e.g. ATEN_CPU_CAPABILITY=default, and
presumably ARM), which moves ~40% of the draws by up to 2.4e-6, hence NOISE_ATOL.
"""
import json

import pytest
import torch
from safetensors.torch import load_file

from stable_cascade_pack.samplers.gdf import diffuse, sample, sample_steps

SAMPLER_NAMES = {"DDPMSampler": "ddpm", "DDIMSampler": "ddim", "LCMSampler": "lcm"}
ATOL = 2e-5
NOISE_ATOL = 5e-6


def standin_model(cond_keys):
    """The deterministic stand-in "epsilon" model of fixtures/README.md section 2.1."""
    def model(x, r, **cond):
        c = torch.zeros(x.shape[0], dtype=x.dtype)
        for i, k in enumerate(cond_keys):
            c = c + (0.5 ** i) * cond[k].flatten(1).mean(1)
        ch = torch.linspace(-1.0, 1.0, x.shape[1], dtype=x.dtype).view(1, -1, 1, 1)
        rr = r.view(-1, 1, 1, 1)
        h = torch.tanh(x * 0.7 + rr * 0.3 + c.view(-1, 1, 1, 1) * (1.0 + 0.5 * ch))
        return rr * x + (1.0 - rr) * 0.5 * h
    return model


def documented_step_noise(meta, data):
    """Draws 1..T of README 2.2 from the case's seed: draw 0 (the start latent, or the img2img
    diffuse epsilon) comes first, then one draw of the latent's shape per step."""
    generator = torch.Generator().manual_seed(meta["seed"])
    shape = tuple(meta["shape"])
    if meta["x_init"] is None:
        torch.randn(shape, generator=generator)
    else:
        diffuse(data["x_clean"], meta["t_start"], generator, shift=1.0)
    return torch.stack([torch.randn(shape, generator=generator) for _ in range(meta["timesteps"])])


class Case:
    def __init__(self, fixtures_dir, name):
        self.meta = json.loads((fixtures_dir / "gdf" / f"{name}.json").read_text())
        self.data = load_file(fixtures_dir / "gdf" / f"{name}.safetensors")
        keys = self.meta["model_cond_keys_in_order"]
        self.cond_keys = keys
        self.conditions = {k: self.data[f"cond.{k}"] for k in keys}
        self.unconditional = {k: self.data[f"uncond.{k}"] for k in keys} if self.meta["cfg"] is not None else None
        if "step_noise" not in self.data:  # not stored twice when another case has the same draws (README 2.4)
            self.data["step_noise"] = documented_step_noise(self.meta, self.data)

    def run(self, record_calls=None, use_sample=False):
        m = self.meta
        generator = torch.Generator().manual_seed(m["seed"])
        start = {"shape": tuple(m["shape"])}
        if m["x_init"] is not None:
            x_init, _ = diffuse(self.data["x_clean"], m["t_start"], generator, shift=1.0)
            start = {"x_init": x_init}
        model = standin_model(self.cond_keys)
        if record_calls is not None:
            inner = model

            def model(x, r, **cond):
                record_calls.append((x.shape, r.clone(), {k: v.clone() for k, v in cond.items()}))
                return inner(x, r, **cond)
        kwargs = dict(conditions=self.conditions, unconditional=self.unconditional, steps=m["timesteps"],
                      cfg=m["cfg"], cfg_rho=m["cfg_rho"], shift=m["shift"], sampler=SAMPLER_NAMES[m["sampler"]],
                      eta=m["sampler_params"].get("eta"), t_start=m["t_start"], generator=generator, **start)
        if use_sample:
            return sample(model, **kwargs)
        return list(sample_steps(model, **kwargs))


@pytest.fixture(scope="module")
def case(gdf_case_name, fixtures_dir):
    return Case(fixtures_dir, gdf_case_name)


def test_trajectory(case):
    calls = []
    steps = case.run(record_calls=calls)
    data, m = case.data, case.meta
    batch = m["shape"][0]
    assert len(steps) == m["timesteps"] == len(calls) == m["model_calls"]

    torch.testing.assert_close(torch.stack([s.x for s in steps]), data["x_t"][1:], atol=ATOL, rtol=0)
    a = torch.stack([s.a for s in steps]).view(-1, 1, 1, 1, 1)
    if "x0" in data:
        torch.testing.assert_close(a * torch.stack([s.x0 for s in steps]), a * data["x0"], atol=ATOL, rtol=0)
    if "eps" in data:
        torch.testing.assert_close(torch.stack([s.eps for s in steps]), data["eps"], atol=ATOL, rtol=0)
    if "step_noise" in data:
        torch.testing.assert_close(torch.stack([s.noise for s in steps]), data["step_noise"], atol=NOISE_ATOL, rtol=0)
    r_fed = torch.stack([r[:batch] for _, r, _ in calls])
    torch.testing.assert_close(r_fed, data["r_fed"], atol=5e-6, rtol=0)
    torch.testing.assert_close(torch.stack([s.t for s in steps]), data["t_range"][:-1], atol=1e-7, rtol=0)
    torch.testing.assert_close(steps[-1].x0, data["result"], atol=ATOL, rtol=0)


def test_model_call_layout(case):
    """One call per step on the doubled batch with cfg: x = cat([x, x]), r repeated, cat([cond, uncond])."""
    calls = []
    case.run(record_calls=calls)
    x_shape, r, cond = calls[0]
    assert list(x_shape) == case.meta["model_batch"]
    assert r.shape == (x_shape[0],)
    for key in case.cond_keys:
        expected = case.conditions[key]
        if case.unconditional is not None:
            expected = torch.cat([expected, case.unconditional[key]])
            assert torch.equal(r[: x_shape[0] // 2], r[x_shape[0] // 2:])
        assert torch.equal(cond[key], expected), key


def test_start_latent_is_draw_0(case):
    steps = case.run()
    data = case.data
    if case.meta["x_init"] is None:
        first = torch.randn(tuple(case.meta["shape"]), generator=torch.Generator().manual_seed(case.meta["seed"]))
        torch.testing.assert_close(first, data["x_t"][0], atol=NOISE_ATOL, rtol=0)
        assert torch.equal(steps[0].x0, (first - steps[0].eps * steps[0].b) / steps[0].a)
    else:
        generator = torch.Generator().manual_seed(case.meta["seed"])
        x_init, noise = diffuse(data["x_clean"], case.meta["t_start"], generator, shift=1.0)
        torch.testing.assert_close(noise, data["diffuse_noise"], atol=NOISE_ATOL, rtol=0)
        torch.testing.assert_close(x_init, data["x_init"], atol=2e-6, rtol=0)
        torch.testing.assert_close(x_init, data["x_t"][0], atol=2e-6, rtol=0)
        # x_init is used as-is: step 0's x0 is computed from it, not from a re-noised latent.
        torch.testing.assert_close((x_init - steps[0].eps * steps[0].b) / steps[0].a, steps[0].x0, atol=0, rtol=0)


def test_result_is_the_final_x0(case):
    steps = case.run()
    result = case.run(use_sample=True)
    assert result.dtype == torch.float32
    assert torch.equal(result, steps[-1].x0)
    torch.testing.assert_close(result, case.data["result"], atol=ATOL, rtol=0)
    if case.meta["sampler"] != "DDIMSampler":  # the last x still carries the last step's noise
        assert not torch.equal(result, steps[-1].x)


def test_ddim_eta0_draws_noise_but_ignores_it(case):
    """The original computes 0 * randn_like(x0): the draw happens (keeping the generator in step
    with the fixtures) but changes nothing; x_{i+1} = a_prev * x0 + b_prev * eps. Checked with
    each case's start latent, conditions and settings, whatever sampler the case itself uses."""
    m = case.meta
    x_start = case.data["x_t"][0]
    runs = []
    for seed in (0, 1):
        generator = torch.Generator().manual_seed(seed)
        runs.append(list(sample_steps(standin_model(case.cond_keys), x_init=x_start, conditions=case.conditions,
                                      unconditional=case.unconditional, steps=m["timesteps"], cfg=m["cfg"],
                                      cfg_rho=m["cfg_rho"], shift=m["shift"], sampler="ddim", eta=0.0,
                                      generator=generator)))
        assert generator.initial_seed() == seed
        follow = torch.randn(3, generator=generator)
        assert torch.equal(follow, _after_draws(seed, m["timesteps"], x_start.shape))
    assert not torch.equal(runs[0][0].noise, runs[1][0].noise)
    assert all(torch.equal(p.x, q.x) for p, q in zip(*runs))
    steps = runs[0]
    for step, following in zip(steps, steps[1:]):
        torch.testing.assert_close(step.x, following.a * step.x0 + following.b * step.eps, atol=1e-6, rtol=0)


def _after_draws(seed, count, shape):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        torch.randn(tuple(shape), generator=generator)
    return torch.randn(3, generator=generator)
