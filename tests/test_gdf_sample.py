"""Unit tests of the GDF loop's contract: noise order, devices/dtypes, callback, CFG, errors."""
import math

import pytest
import torch

from stable_cascade_pack.samplers import guidance
from stable_cascade_pack.samplers.gdf import diffuse, noise_levels, sample, sample_steps
from stable_cascade_pack.samplers.steps import ddim_step, ddpm_step

SHAPE = (2, 4, 6, 5)


def toy_model(x, r, **cond):
    """A smooth epsilon model that uses every input, in the dtype it is given."""
    c = sum(v.flatten(1).mean(1) for v in cond.values() if isinstance(v, torch.Tensor))
    c = torch.zeros(x.shape[0], dtype=x.dtype) if isinstance(c, int) else c
    return torch.tanh(0.8 * x + r.view(-1, 1, 1, 1) + c.view(-1, 1, 1, 1)) * 0.5 + 0.3 * x


def conditions(batch=2):
    g = torch.Generator().manual_seed(7)
    return ({"clip": torch.randn(batch, 3, 8, generator=g)}, {"clip": torch.randn(batch, 3, 8, generator=g)})


def run(**kwargs):
    args = dict(shape=SHAPE, steps=5, generator=torch.Generator().manual_seed(0))
    args.update(kwargs)
    return sample(toy_model, **args)


def draws(seed, count, shape=SHAPE):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(count)], g


@pytest.mark.parametrize("sampler,eta", [("ddpm", None), ("ddim", None), ("ddim", 0.5), ("lcm", None)])
def test_start_noise_then_one_draw_per_step_in_order(sampler, eta):
    cond, uncond = conditions()
    g = torch.Generator().manual_seed(3)
    steps = list(sample_steps(toy_model, shape=SHAPE, conditions=cond, unconditional=uncond, steps=4,
                              sampler=sampler, eta=eta, generator=g))
    expected, g_expected = draws(3, 5)
    x0_start = (expected[0] - steps[0].eps * steps[0].b) / steps[0].a
    assert torch.equal(steps[0].x0, x0_start)  # the start latent was draw 0
    for step, noise in zip(steps, expected[1:]):
        assert torch.equal(step.noise, noise)
    assert torch.equal(torch.randn(4, generator=g), torch.randn(4, generator=g_expected))  # no extra draws


def test_img2img_draws_diffuse_noise_first_and_does_not_renoise():
    g = torch.Generator().manual_seed(5)
    x_clean = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    x_init, eps = diffuse(x_clean, 0.8, g, shift=1.0)
    (expected_eps, *step_noise), _ = draws(5, 4)
    assert torch.equal(eps, expected_eps)
    a, b = noise_levels(torch.tensor(0.8), 1.0)[2:4]
    torch.testing.assert_close(x_init, a * x_clean + b * eps, atol=1e-6, rtol=0)
    steps = list(sample_steps(toy_model, x_init=x_init, steps=3, t_start=0.8, generator=g))
    assert steps[0].t.item() == pytest.approx(0.8)
    assert steps[0].logSNR.item() == pytest.approx(-3.65150, abs=1e-4)  # sampled with shift 2 from t=0.8
    assert torch.equal(steps[0].x0, (x_init - steps[0].eps * steps[0].b) / steps[0].a)
    assert all(torch.equal(s.noise, n) for s, n in zip(steps, step_noise))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_noise_is_drawn_on_cpu_in_float32_whatever_the_model_dtype(dtype):
    cond, uncond = conditions()
    seen = []

    handed = []

    def model(x, r, **c):
        # The sampler hands float32; casting to the network's dtype is the wrapper's (as nodes/sampling.py does).
        handed.append((x.dtype, r.dtype, c["clip"].dtype))
        x, r, c = x.to(dtype), r.to(dtype), {k: v.to(dtype) for k, v in c.items()}
        seen.append((x.dtype, r.dtype, c["clip"].dtype))
        return toy_model(x, r, **c)

    def steps_for(m):
        return list(sample_steps(m, shape=SHAPE, conditions=cond, unconditional=uncond, steps=4,
                                 generator=torch.Generator().manual_seed(11), device="cpu"))

    reference = steps_for(toy_model)
    other = steps_for(model)
    assert set(handed) == {(torch.float32, torch.float32, torch.float32)}
    assert set(seen) == {(dtype, dtype, dtype)}
    for p, q in zip(reference, other):
        assert torch.equal(p.noise, q.noise)
        assert q.x.dtype == q.x0.dtype == torch.float32  # the update's math stays float32
    ours, ref = other[-1].x0, reference[-1].x0
    if dtype == torch.float64:
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    else:  # bf16 keeps 8 bits of mantissa: only check it lands near the float32 result
        assert torch.isfinite(ours).all()
        assert torch.nn.functional.cosine_similarity(ours.flatten(), ref.flatten(), dim=0) > 0.95


def test_callback_once_per_step_with_finite_x0():
    seen = []
    result = run(steps=6, callback=lambda i, n, x0, x: seen.append((i, n, x0.clone(), x.clone())))
    assert [(i, n) for i, n, _, _ in seen] == [(i, 6) for i in range(6)]
    assert all(torch.isfinite(x0).all() and x0.shape == SHAPE and x.shape == SHAPE for _, _, x0, x in seen)
    assert torch.equal(result, seen[-1][2])


def test_a_raising_callback_stops_sampling():
    calls = []

    class Interrupted(Exception):
        pass

    def model(x, r, **c):
        calls.append(1)
        return toy_model(x, r, **c)

    def callback(i, n, x0, x):
        if i == 2:
            raise Interrupted()

    with pytest.raises(Interrupted):
        sample(model, shape=SHAPE, steps=10, generator=torch.Generator().manual_seed(0), callback=callback)
    assert len(calls) == 3


def test_cfg_doubles_the_batch_once_per_step():
    cond, uncond = conditions()
    batches = []

    def model(x, r, **c):
        batches.append((x.shape[0], r.shape[0], c["clip"].shape[0]))
        return toy_model(x, r, **c)

    sample(model, shape=SHAPE, steps=3, conditions=cond, unconditional=uncond, cfg=4.0,
           generator=torch.Generator().manual_seed(0))
    assert batches == [(4, 4, 4)] * 3


@pytest.mark.parametrize("cfg,uncond_given", [(None, True), (1.0, True), (4.0, False)])
def test_no_doubled_batch_without_guidance(cfg, uncond_given):
    """cfg=None, no unconditional, or cfg == 1.0: one plain conditional batch per step."""
    cond, uncond = conditions()
    batches = []

    def model(x, r, **c):
        batches.append(x.shape[0])
        return toy_model(x, r, **c)

    result = sample(model, shape=SHAPE, steps=3, conditions=cond, unconditional=uncond if uncond_given else None,
                    cfg=cfg, generator=torch.Generator().manual_seed(0))
    assert batches == [2, 2, 2]
    plain = sample(toy_model, shape=SHAPE, steps=3, conditions=cond, unconditional=None,
                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(result, plain)


def test_cfg_1_skip_matches_the_doubled_batch_up_to_rounding():
    """The original doubles the batch even at cfg 1; its guided eps is eps_cond up to the rescale's
    rounding (std/(std + 1e-9) and 0.7 * e + 0.3 * e), so skipping changes only float32 ulps."""
    cond, uncond = conditions()
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    r = torch.full((2,), 0.6)
    both = toy_model(torch.cat([x, x]), r.repeat(2), clip=torch.cat([cond["clip"], uncond["clip"]]))
    eps_cond, eps_uncond = both.chunk(2)
    torch.testing.assert_close(guidance.guided_epsilon(eps_cond, eps_uncond, 1.0, 0.7), eps_cond, atol=1e-6, rtol=0)


def test_rescale_uses_the_whole_batch_unbiased_std():
    g = torch.Generator().manual_seed(2)
    eps_cond, eps_uncond = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g) * 3
    eps_cfg = torch.lerp(eps_uncond, eps_cond, 4.0)
    expected = 0.7 * eps_cfg * (eps_cond.std(unbiased=True) / (eps_cfg.std(unbiased=True) + 1e-9)) + 0.3 * eps_cfg
    torch.testing.assert_close(guidance.guided_epsilon(eps_cond, eps_uncond, 4.0, 0.7), expected, atol=1e-6, rtol=1e-6)
    per_sample = [guidance.guided_epsilon(eps_cond[i:i + 1], eps_uncond[i:i + 1], 4.0, 0.7) for i in range(2)]
    assert not torch.allclose(torch.cat(per_sample), expected, atol=1e-4)
    assert torch.equal(guidance.guided_epsilon(eps_cond, eps_uncond, 4.0, 0.0), eps_cfg)


def test_ddpm_is_ddim_with_eta_1_and_keeps_noise_on_the_last_step():
    levels = noise_levels(torch.linspace(1.0, 0.0, 21), 2.0)
    a, b, a_prev, b_prev = levels.a[-2], levels.b[-2], levels.a[-1], levels.b[-1]
    sigma = torch.sqrt(b_prev**2 / b**2) * torch.sqrt(1 - a**2 / a_prev**2)
    assert sigma.item() == pytest.approx(0.0199, abs=1e-4)
    g = torch.Generator().manual_seed(4)
    x0, eps, noise = (torch.randn(SHAPE, generator=g) for _ in range(3))
    assert torch.equal(ddpm_step(x0, eps, a, b, a_prev, b_prev, noise), ddim_step(x0, eps, a, b, a_prev, b_prev, noise, eta=1.0))
    assert torch.equal(sample(toy_model, shape=SHAPE, steps=4, sampler="ddim", eta=1.0, generator=torch.Generator().manual_seed(0)),
                       sample(toy_model, shape=SHAPE, steps=4, sampler="ddpm", generator=torch.Generator().manual_seed(0)))


def test_list_conditions_are_batched_per_element():
    """ControlNet-style list inputs: per-element cat, None stays None."""
    cond, uncond = conditions()
    hint = [torch.ones(2, 4, 6, 5), None]
    seen = []

    def model(x, r, clip, cnet):
        seen.append(cnet)
        return toy_model(x, r, clip=clip)

    sample(model, shape=SHAPE, steps=1, conditions={**cond, "cnet": hint},
           unconditional={**uncond, "cnet": [torch.zeros(2, 4, 6, 5), None]}, generator=torch.Generator().manual_seed(0))
    assert seen[0][1] is None
    assert torch.equal(seen[0][0], torch.cat([torch.ones(2, 4, 6, 5), torch.zeros(2, 4, 6, 5)]))


@pytest.mark.parametrize("kwargs,message", [
    (dict(sampler="euler"), "unknown sampler 'euler'"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(steps=2.5), "steps must be an integer >= 1"),
    (dict(x_init=torch.zeros(SHAPE)), "exactly one of `shape`"),
    (dict(shape=None), "exactly one of `shape`"),
    (dict(sampler="ddpm", eta=0.5), "eta applies to 'ddim' only"),
    (dict(sampler="ddim", eta=-1.0), "eta must be >= 0"),
    (dict(t_start=0.0), "t_start must be in (0, 1]"),
    (dict(t_start=1.5), "t_start must be in (0, 1]"),
    (dict(shift=0.0), "shift must be > 0"),
    (dict(cfg_rho=-0.1), "cfg_rho must be >= 0"),
    (dict(conditions={"clip": torch.zeros(2, 1)}, unconditional={"pooled": torch.zeros(2, 1)}), "same keys"),
])
def test_invalid_arguments_raise_value_error(kwargs, message):
    calls = []
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("`", ".")):
        sample(lambda *a, **k: calls.append(1), **{**dict(shape=SHAPE, steps=5), **kwargs})
    assert calls == []  # rejected before any model call


def test_result_is_float32_and_finite_for_every_sampler():
    for sampler in ("ddpm", "ddim", "lcm"):
        result = run(sampler=sampler)
        assert result.dtype == torch.float32 and result.shape == SHAPE and torch.isfinite(result).all()
        assert not math.isnan(result.std().item())
