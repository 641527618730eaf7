"""Network coordinates on real processes: GET /v1/coordinates and ``chatterd rtt`` against a
running cluster on loopback (the accuracy of the estimates is tested in virtual time, with
known delays: tests/sim/test_coordinates_sim.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from e2e_helpers import Completed, run_cli

from chatterd.core.coordinates import COORD_DIMENSIONS, VIVALDI_ERROR_MAX, VIVALDI_HEIGHT_MIN
from chatterd.testing import local_cluster

pytestmark = pytest.mark.e2e

LOOPBACK_MAX_S = 0.05  # a loopback round trip takes ~0.1 ms; 50 ms would be a wrong estimate


async def chatterd(*args: str) -> Completed:
    return await run_cli("chatterd", *args)


def one_line_error(res: Completed, code: int) -> str:
    assert res.returncode == code, str(res)
    assert res.stdout == "", str(res)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chatterd"), str(res)
    return lines[0]


async def test_rtt_and_coordinates(tmp_path: Path) -> None:
    async with local_cluster(3, log_dir=tmp_path) as cluster:
        a = cluster.nodes[0]
        names = {n.name for n in cluster.nodes}

        async def all_known() -> bool:
            view = await a.try_get("/v1/coordinates")
            return bool(view) and {r["name"] for r in view["coordinates"]} == names

        await cluster.wait_for(all_known, timeout=30)  # the warm-up probes go every second
        view = await a.get("/v1/coordinates")
        assert view["node"] == a.name and view["enabled"] is True and view["samples"] >= 1
        for row in view["coordinates"]:
            assert len(row["vec"]) == COORD_DIMENSIONS
            assert 0 <= row["error"] <= VIVALDI_ERROR_MAX
            assert row["height"] >= VIVALDI_HEIGHT_MIN * 0.99

        # One NODE: from the asked node; two: between them, as the asked node knows them.
        res = await chatterd("rtt", "n1", "--http", a.addr)
        assert res.returncode == 0 and res.stderr == "", str(res)
        m = re.fullmatch(r"Estimated n0 <-> n1 rtt: (\d+\.\d{3}) ms \(from n0's coordinates\)\n", res.stdout)
        assert m, res.stdout
        assert 0 < float(m[1]) / 1000 < LOOPBACK_MAX_S
        res = await chatterd("rtt", "n1", "n2", "--json", "--http", a.addr)
        assert res.returncode == 0, str(res)
        js = json.loads(res.stdout)
        assert js["a"] == "n1" and js["b"] == "n2" and 0 < js["rtt_s"] < LOOPBACK_MAX_S

        # Mistakes: one line each, exit 1 for a member it has no coordinate of, 2 for usage.
        line = one_line_error(await chatterd("rtt", "nobody", "--http", a.addr), 1)
        assert "has no coordinate for nobody" in line
        line = one_line_error(await chatterd("rtt", "n1", "n2", "n0", "--http", a.addr), 2)
        assert "one or two NODE names" in line
        one_line_error(await chatterd("rtt", "--http", a.addr), 2)
