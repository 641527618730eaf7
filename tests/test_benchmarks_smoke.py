"""A quick run of each benchmark's harness, so CI notices when one breaks.

The full runs (minutes to an hour, figures in docs/benchmarks.md) are not part of the suite;
these use tiny sizes and check that each command completes and reports its figures.
``compare`` runs chatter plaintext and sealed (``chatter-sealed``) side by side.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.peers import make_cluster
from benchmarks.peers.chatter_cluster import LABEL, ChatterCluster
from chatterd.core.config import ENCRYPT_KEY_ENV
from chatterd.core.keyring import parse_key

ROOT = Path(__file__).resolve().parent.parent

SMOKE = {
    "latency": ("--n 3 --repeat 1 --messages 2 --idle 1 --settle 0.2", "dead after kill -9"),
    "compare": (
        "--n 3 --repeat 1 --messages 2 --idle 1 --settle 0.2 --idle-after 0 "
        "--systems chatter,chatter-sealed --no-bytes",
        "chatter-sealed",
    ),
    "sim_scale": ("--sizes 30 --messages 2 --skip loss partition tradeoff", "size"),
    "sim_idle": ("--designs classic probe-fast --n 10 --window 5 --kills 1 --losses 0.05 --minutes 0.2", "probe-fast"),
    "throughput": (
        "--parts core,process --core-count 500 --rates 1000 --series new-user --step 1 --no-py-spy",
        "sustained",
    ),
    "scale": ("--n 5 --minutes 0.1 --cpu-window 2 --settle 1", "false failures"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(SMOKE))
def test_benchmark_smoke(name: str, tmp_path: Path) -> None:
    args, expect = SMOKE[name]
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *args.split(), "--json", str(out)]
    if name == "scale":
        cmd += ["--log-dir", str(tmp_path / "logs")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert expect in r.stdout
    data = json.loads(out.read_text())
    assert data
    if name == "sim_scale":
        row = data["size"][0]
        assert row["n"] == 30 and row["detection"]["reported"] == 29 and row["false_deaths"] == 0
    if name == "sim_idle":
        classic, probe = data["designs"]
        assert classic["load"]["datagrams_by_kind"]["heartbeat"] == 12.0 and probe["detection"]["max_s"] is not None
    if name == "compare":
        results = data["sizes"][0]["results"]
        assert [r["system"] for r in results] == ["chatter", "chatter-sealed"]
        assert all(r["problems"] == [] and r["dead"]["samples"]["main"]["count"] == 2 for r in results)


def test_sealed_chatter_nodes_share_one_key_and_label(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENCRYPT_KEY_ENV, "a key of the caller's")
    sealed = make_cluster("chatter-sealed", tmp_path)
    plain = make_cluster("chatter", tmp_path)
    assert isinstance(sealed, ChatterCluster) and isinstance(plain, ChatterCluster)
    assert (sealed.system, plain.system) == ("chatter-sealed", "chatter")
    assert sealed.key is not None and len(parse_key(sealed.key)) == 32 and plain.key is None
    seed = sealed.new_node("n0", None)
    other = sealed.new_node("n1", seed)
    for node in (seed, other):
        args = node.local.args
        assert args[args.index("--encrypt") + 1] == sealed.key and args[args.index("--label") + 1] == LABEL
        assert ENCRYPT_KEY_ENV not in node.local.env
    bare = plain.new_node("n0", None)
    assert "--encrypt" not in bare.local.args and ENCRYPT_KEY_ENV not in bare.local.env


@pytest.mark.e2e
def test_loopback_loss_drops_only_the_given_ports_and_counts_what_it_dropped() -> None:
    import socket

    from benchmarks._lib.iptables import LoopbackLoss, iptables, iptables_problem

    why = iptables_problem()
    if why:
        pytest.skip(f"no iptables here: {why}")
    socks = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        socks.append(s)
    lossy = socks[0]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with LoopbackLoss([lossy.getsockname()[1]], 0.5) as loss:
            for s in socks:
                for _ in range(200):
                    sender.sendto(b"x", s.getsockname())
            got = []
            for s in socks:
                n = 0
                try:
                    while True:
                        s.recv(16)
                        n += 1
                except TimeoutError:
                    pass
                got.append(n)
            dropped = loss.dropped()
            chain = loss.chain
        assert got[1] == 200  # another port loses nothing
        assert 0 < got[0] < 200 and got[0] + dropped == 200
        assert chain not in iptables("-S")  # removed on the way out
    finally:
        for s in (*socks, sender):
            s.close()
