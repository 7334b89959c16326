"""Counting a model's network time steps from outside (tests see that primes are read once and that nothing
is computed ahead of what was asked for). Imported by the test modules; not collected itself."""

from __future__ import annotations

from typing import Any

import numpy as np


class Steps:
    """Wraps `model.network`'s `forward` and `step` on the instance: `count` is the time steps run since,
    T per `forward` of (B, T) ids, 1 per `step`."""

    def __init__(self, model: Any) -> None:
        self.count = 0
        network = model.network
        forward, step = network.forward, network.step

        def counted_forward(ids: Any, state: Any = None) -> Any:
            self.count += np.asarray(ids).shape[-1]
            return forward(ids, state)

        def counted_step(ids: Any, state: Any) -> Any:
            self.count += 1
            return step(ids, state)

        network.forward, network.step = counted_forward, counted_step
