"""Mult-VAE (Liang et al., WWW 2018): a variational autoencoder over the bag of a user's items.

The encoder reads the L2-normalised multi-hot bag (with input dropout), the decoder gives a multinomial
over every item, and the KL term is annealed linearly up to `beta_max`. Order is ignored: a window's
items form one bag, and recommendations come from the bag of the most recent `max_len` items.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from lmrec.models.base import Batch, ModelConfig, SequentialRecommender, register


class MultVAEConfig(ModelConfig):
    """Mult-VAE hyper-parameters (the paper's [I → 600 → 200 → 600 → I], dropout 0.5, beta cap 0.2).

    `max_len` defaults to 200 because a bag model gains from long histories and costs little more.
    """

    max_len: int = Field(200, ge=1)
    hidden: int = Field(600, ge=1)
    latent: int = Field(200, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    beta_max: float = Field(0.2, ge=0)
    anneal_steps: int = Field(20_000, ge=1)


@register("multvae")
class MultVAE(SequentialRecommender):
    """Bag-of-items VAE with a multinomial likelihood; trained with its own loss, not the objective."""

    Config = MultVAEConfig

    def __init__(self, n_items: int, config: MultVAEConfig) -> None:
        super().__init__(n_items, config)
        self.cfg = config
        self.encoder = nn.Sequential(
            nn.Linear(n_items, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 2 * config.latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(config.latent, config.hidden), nn.Tanh(), nn.Linear(config.hidden, n_items)
        )
        self.anneal_step: Tensor
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.long))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.normal_(module.bias, std=0.001)

    def bag(self, items: Tensor) -> Tensor:
        """Multi-hot `[B, n_items]` (column j is item j + 1) of the items of right-aligned rows `[B, T]`."""
        hot = torch.zeros(items.shape[0], self.n_items + 1, device=items.device)
        return hot.scatter_(1, items, 1.0)[:, 1:]

    def encode(self, bag: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z | bag); input dropout applies in training mode only."""
        x = F.dropout(F.normalize(bag, dim=1), self.cfg.dropout, self.training)
        mean, logvar = self.encoder(x).chunk(2, -1)
        return mean, logvar

    def beta(self) -> Tensor:
        """KL weight of the current step: linear from 0 to `beta_max` over `anneal_steps` updates."""
        progress = self.anneal_step / self.cfg.anneal_steps
        return self.cfg.beta_max * progress.clamp(max=1.0)

    def loss(self, batch: Batch) -> Tensor:
        """Multinomial negative log-likelihood of the window's bag plus the annealed KL term.

        Every call in training mode advances the annealing counter (a buffer, so resuming continues it).
        """
        bag = self.bag(batch.items)
        mean, logvar = self.encode(bag)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if self.training else mean
        nll = -(F.log_softmax(self.decoder(z), 1) * bag).sum(1).mean()
        kl = 0.5 * (logvar.exp() + mean.pow(2) - 1 - logvar).sum(1).mean()
        loss = nll + self.beta() * kl
        if self.training:
            self.anneal_step += 1
        return loss

    def score_all(self, history: Tensor, lengths: Tensor) -> Tensor:
        """Decoder logits at the posterior mean of the history's bag; column 0 is -inf."""
        mean, _ = self.encode(self.bag(history[:, -self.max_len :]))
        return F.pad(self.decoder(mean), (1, 0), value=float("-inf"))
