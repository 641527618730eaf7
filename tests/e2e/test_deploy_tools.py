"""deploy/ checked by the tools that read it: ``systemd-analyze verify`` and ``security`` on
the unit (they work offline, without systemd as PID 1), ``kubectl kustomize`` on the
manifests (rendered, then validated against the Kubernetes schemas), and the probes (the
image's HEALTHCHECK, the pods' liveness command) against a live node, a degraded one and none.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import trio
import yaml
from e2e_helpers import CLI_TIMEOUT, Completed, wait_until

from chatterd.testing import HOST, free_port, local_cluster

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "chatterd.service"
KUBE = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30"
EXPOSURE_THRESHOLD = "20"  # systemd-analyze security, in tenths: over 2.0 fails; the unit scores 1.3, 10.0 is none

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (apt-get install systemd)"
)


async def run(*argv: str, env: dict[str, str] | None = None) -> Completed:
    with trio.fail_after(CLI_TIMEOUT):
        proc = await trio.run_process(
            list(argv), capture_stdout=True, capture_stderr=True, check=False, stdin=b"", env=env
        )
    return Completed(list(argv), proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def unit_copy(tmp_path: Path, old: str = "", new: str = "") -> Path:
    """The unit, with one text replaced (a broken copy), under the name systemd expects."""
    text = UNIT.read_text()
    if old:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "chatterd.service"
    path.write_text(text)
    return path


@needs_systemd_analyze
async def test_systemd_analyze_verify_finds_nothing_to_say_about_the_unit(tmp_path: Path) -> None:
    res = await run("systemd-analyze", "verify", str(unit_copy(tmp_path)))
    assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), str(res)


BROKEN_UNITS = {
    "unknown-key": ("Restart=on-failure", "Restrat=on-failure", "Unknown key"),
    "bad-value": ("KillMode=mixed", "KillMode=sometimes", "Failed to parse kill mode"),
    "missing-program": ("ExecStart=/usr/bin/env ", "ExecStart=/usr/bin/no-such-env ", "is not executable"),
    "unknown-section": ("[Install]", "[Instal]", "Unknown section"),
}


@needs_systemd_analyze
@pytest.mark.parametrize("case", sorted(BROKEN_UNITS))
async def test_systemd_analyze_verify_catches_a_broken_copy(tmp_path: Path, case: str) -> None:
    old, new, says = BROKEN_UNITS[case]
    res = await run("systemd-analyze", "verify", str(unit_copy(tmp_path, old, new)))
    assert says in res.stderr, str(res)


@needs_systemd_analyze
async def test_the_units_sandbox_scores_under_the_exposure_threshold(tmp_path: Path) -> None:
    argv = ["systemd-analyze", "security", "--offline=yes", f"--threshold={EXPOSURE_THRESHOLD}"]
    res = await run(*argv, str(unit_copy(tmp_path)))
    assert res.returncode == 0, str(res)
    assert re.search(r"Overall exposure level for chatterd\.service: [0-9.]+ OK", res.stdout), str(res)
    bare = "\n".join(line for line in UNIT.read_text().splitlines() if not line.startswith(("Protect", "Private")))
    (tmp_path / "bare").mkdir()
    weaker = tmp_path / "bare" / "chatterd.service"
    weaker.write_text(bare.replace("DynamicUser=yes", "DynamicUser=no"))
    assert (await run(*argv, str(weaker))).returncode != 0  # the threshold bites


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (its kustomize)")
async def test_kubectl_kustomize_renders_valid_resources_in_the_namespace() -> None:
    res = await run("kubectl", "kustomize", str(KUBE))
    assert res.returncode == 0, str(res)
    rendered = [d for d in yaml.safe_load_all(res.stdout) if d]
    assert sorted(d["kind"] for d in rendered) == ["ConfigMap", "PodDisruptionBudget", "Service", "StatefulSet"]
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == "chatter"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "chatter"
    sts = next(d for d in rendered if d["kind"] == "StatefulSet")
    image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/chatter/chatterd:0.1.0"


def healthcheck_argv() -> list[str]:
    """The Dockerfile's HEALTHCHECK command (its exec form, a JSON array)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*? CMD (\[.*\])$", text, re.MULTILINE)
    assert match, "no HEALTHCHECK ... CMD [...] in the Dockerfile"
    argv: list[str] = json.loads(match.group(1))
    assert argv[0] == "python3"
    return [sys.executable, *argv[1:]]


def liveness_argv(port: int) -> list[str]:
    """The StatefulSet's liveness command, aimed at ``port`` instead of 2428."""
    (sts,) = yaml.safe_load_all((KUBE / "statefulset.yaml").read_text())
    argv: list[str] = sts["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["command"]
    assert argv[0] == "python3" and "2428" in argv[-1]
    return [sys.executable, *argv[1:-1], argv[-1].replace("2428", str(port))]


async def probe_results(port: int) -> tuple[int, int]:
    """(HEALTHCHECK's exit status, liveness's) for the API on ``port``."""
    env = {"CHATTER_HTTP_ADDR": f"{HOST}:{port}", "PATH": "/usr/bin:/bin"}
    health = await run(*healthcheck_argv(), env=env)
    live = await run(*liveness_argv(port), env=env)
    return health.returncode, live.returncode


async def test_the_probes_tell_healthy_degraded_and_gone_apart(tmp_path: Path) -> None:
    dead_seed = f"{HOST}:{free_port()}"  # nobody answers there: the node stays "not yet joined"
    async with local_cluster(1, log_dir=tmp_path) as healthy:
        node = healthy.nodes[0]

        async def both_pass() -> bool:  # a loaded machine can make a new node "starved" a while
            return await probe_results(node.port) == (0, 0)

        await wait_until(both_pass, 30, "the probes to pass on a healthy node")
        degraded = healthy.add("degraded", join=[], args=["--join", dead_seed])

        async def answers_503() -> bool:
            h = await degraded.try_get("/v1/health")
            return h is not None and h["status"] == "degraded"

        await wait_until(answers_503, 20, "the node joining a dead seed to answer /v1/health")
        # Docker's HEALTHCHECK says unhealthy (503); liveness says alive: a restart would not help.
        assert await probe_results(degraded.port) == (1, 0)
        gone = free_port()
        assert await probe_results(gone) == (1, 1)
