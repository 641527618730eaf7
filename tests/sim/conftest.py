from collections.abc import Callable

import pytest

from chatterd.sim import Simulation


@pytest.fixture
def cluster() -> Callable[..., tuple[Simulation, list[str]]]:
    """cluster(n, loss=0.0, seed=1) → a settled simulated cluster of n nodes and their names."""

    def make(n: int, loss: float = 0.0, seed: int = 1, **kw: object) -> tuple[Simulation, list[str]]:
        sim = Simulation(seed=seed, loss=loss, **kw)  # type: ignore[arg-type]
        names = sim.start_cluster(n)
        return sim, names

    return make
