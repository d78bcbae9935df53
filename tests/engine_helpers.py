"""Shared builders for engine tests: a tiny real MAISI wrapper with randomised zero-initialised layers, and an
analytic Gaussian-to-Gaussian flow whose average velocity is known in closed form."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuromf.models import MeanFlowUNet

TINY = dict(
    num_channels=(8, 16),
    attention_levels=(False, True),
    num_res_blocks=1,
    num_head_channels=8,
    norm_num_groups=4,
)


def tiny_model(seed: int = 0, randomise: bool = True, **kw) -> MeanFlowUNet:
    """A small real MAISI wrapper with its zero-initialised parameters randomised (else du/dt and grads vanish)."""
    torch.manual_seed(seed)
    model = MeanFlowUNet(in_channels=kw.pop("in_channels", 2), **{**TINY, **kw})
    if randomise:  # MAISI zero-initialises its output convs and every res block's conv2: randomise them
        with torch.no_grad():
            for p in model.parameters():
                if p.abs().sum() == 0:
                    p.normal_(0, 0.05)
    return model


class GaussianFlow(nn.Module):
    """Exact flows for data x ~ N(mu, s^2 I) and noise eps ~ N(0, I) on z_t = (1 - t) x + t eps.

    z_t ~ N(m_t, sig_t^2) with m_t = (1 - t) mu, sig_t^2 = (1 - t)^2 s^2 + t^2; the probability-flow ODE maps
    z_t -> z_r = m_r + (sig_r / sig_t)(z_t - m_t), so the average velocity is
    u(z, r, t) = (z - z_r) / (t - r) and the marginal instantaneous velocity
    v(z, t) = -mu + (sig_t' / sig_t)(z - m_t), sig_t' = ((1 - t)(-s^2) + t) / sig_t ... (d sig_t / dt).
    """

    prediction_type = "u"

    def __init__(self, mu: float, s: float, use_v_head: bool = True):
        super().__init__()
        self.mu, self.s, self.use_v_head = mu, s, use_v_head

    def _stats(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return (1 - t) * self.mu, torch.sqrt((1 - t) ** 2 * self.s**2 + t**2)

    @staticmethod
    def _b(a: Tensor, z: Tensor) -> Tensor:
        return a.view(-1, *([1] * (z.ndim - 1)))

    def forward(self, z: Tensor, r: Tensor, t: Tensor) -> Tensor:
        (m_t, sig_t), (m_r, sig_r) = self._stats(t), self._stats(r)
        h = t - r
        z_r = self._b(m_r, z) + self._b(sig_r / sig_t, z) * (z - self._b(m_t, z))
        return (z - z_r) / self._b(h, z)

    def u_and_v(self, z: Tensor, r: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(u, v) of one "pass": the marginal v does not depend on r (the iMF v-head's optimum)."""
        return self.forward(z, r, t), self.v(z, t)

    def v(self, z: Tensor, t: Tensor) -> Tensor:
        m_t, sig_t = self._stats(t)
        dsig = ((1 - t) * (-(self.s**2)) + t) / sig_t
        return -self.mu + self._b(dsig / sig_t, z) * (z - self._b(m_t, z))


class PerturbedGaussianFlow(GaussianFlow):
    """GaussianFlow's exact u plus `delta` z (a trainable scalar): delta = 0 is the exact average velocity.

    r = t gives the limit u(z, t, t) = v(z, t) (the marginal instantaneous velocity), also with delta z added.
    """

    def __init__(self, mu: float, s: float, use_v_head: bool = False, delta: float = 0.0):
        super().__init__(mu, s, use_v_head)
        self.delta = nn.Parameter(torch.tensor(float(delta)))

    def forward(self, z: Tensor, r: Tensor, t: Tensor) -> Tensor:
        same = t == r
        exact = super().forward(z, torch.where(same, t / 2, r), t)  # finite on both branches
        exact = torch.where(self._b(same, z), self.v(z, t), exact)
        return exact + self.delta * z
