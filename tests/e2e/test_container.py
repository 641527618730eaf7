"""The container image (Dockerfile), built and run with podman: three containers form a
cluster, each healthy by the image's HEALTHCHECK, the operator commands work inside, no
zombie is left by an event handler that backgrounds a process, and ``podman stop`` is a
graceful leave (exit status 0, "left" on the others). Then the Kubernetes StatefulSet's
container as podman can play it (its arguments, the ConfigMap's file, a read-only root, no
capability, the token file): it joins, passes its probes, and its preStop is a graceful leave.

Skipped without podman, runc and debootstrap (.ci/run installs them). No registry of images
is reachable here, so the Python 3.11 base is a Debian bookworm made with debootstrap (its
python3 is 3.11) and imported into podman once (kept between runs as BASE_IMAGE); the build
gets it as --build-arg PYTHON_IMAGE. The containers share the host's network and listen on
127.0.0.1 only, on free ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml
from e2e_helpers import Completed, wait_until

from chatterd.core.keyring import encode_key
from chatterd.testing import HOST, free_port


def tool(name: str) -> str | None:
    """A program's path, in the sbin directories too (debootstrap lives in /usr/sbin)."""
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not all(tool(name) for name in ("podman", "runc", "debootstrap")),
        reason="needs podman, runc and debootstrap (apt-get install podman runc debootstrap)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
KEY = encode_key(bytes(range(32)))  # the test cluster's gossip key
BASE_IMAGE = "localhost/chatter-python:3.11-bookworm"
IMAGE = "localhost/chatterd:test"
# This sandbox refuses crun's default cgroup setup and rlimits above its own: runc, and
# rlimits within the machine's. Harmless where podman runs unhindered.
RUNTIME = ["--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]
# The build trusts the host's CA bundle (a TLS-intercepting proxy, if any, included) through a
# pip config mounted for the build only: nothing of it lands in the image.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# podman's network plugins and debootstrap call programs in sbin (iptables, chroot).
SBIN_ENV = {**os.environ, "PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/local/sbin:/usr/sbin:/sbin"}
BUILD_TIMEOUT = 900.0
RUN_TIMEOUT = 60.0
CLUSTER_TIMEOUT = 30.0


async def podman(*args: str, timeout: float = RUN_TIMEOUT, check: bool = True) -> Completed:
    argv = ["podman", *args]
    with trio.fail_after(timeout):
        proc = await trio.run_process(
            argv, capture_stdout=True, capture_stderr=True, check=False, stdin=b"", env=SBIN_ENV
        )
    res = Completed(argv, proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    if check:
        assert res.returncode == 0, str(res)
    return res


async def ensure_base_image() -> None:
    """A Debian bookworm with python3 (3.11) and its venv module, as BASE_IMAGE: made once."""
    if (await podman("image", "exists", BASE_IMAGE, check=False)).returncode == 0:
        return
    with tempfile.TemporaryDirectory(prefix="chatter-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        argv = [
            str(tool("debootstrap")),
            "--variant=minbase",
            "--include=python3,python3-venv",
            "bookworm",
            str(rootfs),
        ]
        with trio.fail_after(BUILD_TIMEOUT):
            done = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False, stdin=b"", env=SBIN_ENV
            )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        tar = Path(tmp) / "rootfs.tar"
        with trio.fail_after(BUILD_TIMEOUT):
            await trio.run_process(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True, stdin=b"")
        await podman("import", str(tar), BASE_IMAGE, timeout=BUILD_TIMEOUT)


async def build_image(tmp_path: Path) -> None:
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text("[global]\ncert = /etc/ssl/certs/host-ca.crt\n")
    mounts = ["-v", f"{pip_conf}:/etc/pip.conf:ro"]
    if HOST_CA.exists():
        mounts += ["-v", f"{HOST_CA}:/etc/ssl/certs/host-ca.crt:ro"]
    await podman(
        "build", *RUNTIME, *LIMITS, *mounts, "--format", "docker", "--layers=false",
        "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}", "-t", IMAGE, str(ROOT),
        timeout=BUILD_TIMEOUT,
    )  # fmt: skip


Start = Callable[..., Awaitable[str]]


@contextlib.asynccontextmanager
async def containers() -> AsyncIterator[Start]:
    """``start(*run_options, args=[...])`` runs a container of the image on the host's network
    with the cluster's key; every container started is removed (podman rm -f, by id) on the way out."""
    started: list[str] = []

    async def start(*run_options: str, args: Sequence[str]) -> str:
        res = await podman(
            "run", "-d", *RUNTIME, *LIMITS, "--network", "host", "--health-interval", "disable",
            "-e", f"CHATTER_ENCRYPT_KEY={KEY}", *run_options, IMAGE, *args,
        )  # fmt: skip
        started.append(res.stdout.strip().splitlines()[-1])
        return started[-1]

    try:
        yield start
    finally:
        with trio.CancelScope(shield=True):
            for cid in started:
                await podman("rm", "-f", "-t", "2", cid, check=False)


async def start_node(start: Start, name: str, port: int, *options: str) -> str:
    """A node on 127.0.0.1:PORT, the image's config plus ``options``."""
    listen = ["--listen", f"{HOST}:{port}", "--http", f"{HOST}:{port}", "--name", name]
    args = ["--config", "/etc/chatterd/chatterd.toml", *listen, *options]
    return await start("-e", f"CHATTER_HTTP_ADDR={HOST}:{port}", args=args)


async def states(client: httpx.AsyncClient, port: int) -> dict[str, str]:
    try:
        rows = (await client.get(f"http://{HOST}:{port}/v1/members")).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {m["name"]: m["state"] for m in rows}


async def test_the_image_builds_and_three_containers_form_a_cluster_and_leave_gracefully(tmp_path: Path) -> None:
    await ensure_base_image()
    await build_image(tmp_path)
    try:
        assert "--config PATH" in (await podman("run", "--rm", *RUNTIME, *LIMITS, IMAGE, "--help")).stdout
        async with containers() as start, httpx.AsyncClient(timeout=2.0) as client:
            await check_cluster(start, client)
            await check_pod_spec(start, client, tmp_path)
    finally:
        await podman("rmi", "-f", IMAGE, check=False)


async def check_cluster(start: Start, client: httpx.AsyncClient) -> None:
    """Three nodes: converged, healthy, operable, no zombie, a graceful stop."""
    ports = [free_port() for _ in range(3)]
    handler = ["--event-handler", "sh -c 'sleep 0.1 &'"]  # leaves an orphan each time
    ids = [await start_node(start, "c0", ports[0], *handler)]
    ids += [await start_node(start, f"c{i}", ports[i], "--join", f"{HOST}:{ports[0]}") for i in (1, 2)]

    async def converged() -> bool:
        views = [await states(client, p) for p in ports]
        return all(v == {"c0": "alive", "c1": "alive", "c2": "alive"} for v in views)

    await wait_until(converged, CLUSTER_TIMEOUT, "three containers to see each other alive")
    for cid in ids:  # the image's HEALTHCHECK: its python3 one-liner on /v1/health
        await podman("healthcheck", "run", cid)
    health = (await client.get(f"http://{HOST}:{ports[0]}/v1/health")).json()
    assert health["encryption"] == "on"  # the key from the environment

    members = await podman("exec", ids[0], "chatterd", "members", "--json")
    assert {m["name"] for m in json.loads(members.stdout)} == {"c0", "c1", "c2"}
    tagged = await podman("exec", ids[0], "chatterd", "tags", "set", "dc=east")  # finds the token
    assert "dc=east" in tagged.stdout
    await trio.sleep(1.0)  # the handlers' orphans (sleep 0.1) have exited by now
    ps = await podman("exec", ids[0], "sh", "-c", "cat /proc/[0-9]*/stat")
    zombies = [line for line in ps.stdout.splitlines() if line.split(") ")[-1].startswith("Z")]
    assert zombies == [], ps.stdout
    assert (await podman("exec", ids[0], "id", "-u")).stdout.strip() == "2428"

    await podman("stop", "-t", "10", ids[2])  # SIGTERM through tini to chatterd
    inspect = await podman("inspect", ids[2], "--format", "{{.State.ExitCode}}")
    assert inspect.stdout.strip() == "0"

    async def c2_left() -> bool:
        return (await states(client, ports[0])).get("c2") == "left"

    await wait_until(c2_left, CLUSTER_TIMEOUT, "c0 to see c2 leave (not fail)")


def pod_container() -> dict[str, Any]:
    (sts,) = yaml.safe_load_all((KUBE / "statefulset.yaml").read_text())
    c: dict[str, Any] = sts["spec"]["template"]["spec"]["containers"][0]
    return c


async def check_pod_spec(start: Start, client: httpx.AsyncClient, tmp_path: Path) -> None:
    """The StatefulSet's container as podman can play it: its arguments and the ConfigMap's
    file, a read-only root with a /tmp, no capability, no privilege escalation, the token as a
    read-only file; it joins (readiness 200), passes its liveness command, and its preStop
    (chatterd leave) is a graceful leave. Only the seed differs: 127.0.0.1, not the Service's
    DNS name, and the node listens on a free loopback port, not 0.0.0.0:2428."""
    seed, port = free_port(), free_port()
    (configmap,) = yaml.safe_load_all((KUBE / "configmap.yaml").read_text())
    label = tomllib.loads(configmap["data"]["chatterd.toml"])["label"]
    await start_node(start, "seed", seed, "--label", label)  # else the two never exchange a datagram
    c = pod_container()
    (tmp_path / "chatterd.toml").write_text(configmap["data"]["chatterd.toml"])
    (tmp_path / "http-token").write_text("pod-token-for-this-test-only\n")
    (tmp_path / "data").mkdir()
    os.chown(tmp_path / "data", 2428, 2428)  # the pod's fsGroup makes its volume writable
    values = {"POD_NAME": "chatter-1", "POD_NAMESPACE": "chatter", "POD_IP": HOST}
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in c["args"]]
    args = [f"--join={HOST}:{seed}" if a.startswith("--join=dns+") else a for a in args]
    args = [a.replace(":2428", f":{port}") for a in args] + ["--listen", f"{HOST}:{port}", "--http", f"{HOST}:{port}"]
    mounts = {
        tmp_path / "chatterd.toml": "/etc/chatterd/chatterd.toml:ro",
        tmp_path / "http-token": "/etc/chatterd-secrets/http-token:ro",
        tmp_path / "data": "/var/lib/chatterd",
    }
    pod = await start(
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--user", "2428:2428", *[o for src, dst in mounts.items() for o in ("-v", f"{src}:{dst}")],
        args=args,
    )  # fmt: skip

    async def ready() -> bool:  # the readiness probe: GET /v1/health answers 200
        try:
            return (await client.get(f"http://{HOST}:{port}/v1/health")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_until(ready, CLUSTER_TIMEOUT, "the pod-like node to be ready (joined)")
    assert (await states(client, seed)).get("chatter-1") == "alive"
    live = c["livenessProbe"]["exec"]["command"]
    await podman("exec", pod, *live[:-1], live[-1].replace("2428", str(port)))
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    left = await podman("exec", "-e", f"CHATTER_HTTP_ADDR={HOST}:{port}", pod, *pre_stop, check=False)
    assert left.returncode in (0, 137), str(left)  # 137: cut short as the container stopped

    async def pod_left() -> bool:
        return (await states(client, seed)).get("chatter-1") == "left"

    await wait_until(pod_left, CLUSTER_TIMEOUT, "the seed to see the pod leave")
    assert (await podman("wait", pod)).stdout.strip() == "0"
