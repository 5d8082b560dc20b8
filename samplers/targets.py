"""The epsilon target (GDF's EpsilonTarget): the network predicts the noise that was added.

    training target = eps
    x0_hat          = (x_t - pred * b) / a,    eps_hat = pred
"""


def epsilon_target(x0, eps):
    """What the network is trained to output for x_t = a * x0 + b * eps."""
    return eps


def x0_from_epsilon(x_t, pred, a, b):
    return (x_t - pred * b) / a
