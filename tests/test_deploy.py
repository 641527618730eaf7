"""deploy/: the Kubernetes manifests against the Kubernetes API's JSON schemas (offline, from
the kubernetes-validate package, strict: an unknown field fails) and against what chatterd
needs of them; the systemd unit's required settings; no secret committed anywhere.

The tools that run as processes (systemd-analyze, kubectl kustomize, the probes against a
live node) are in tests/e2e/test_deploy_tools.py.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from chatterd.configfile import namespace_from_table, parse_daemon_args

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
UNIT = DEPLOY / "systemd" / "chatterd.service"
KUBERNETES_VERSION = "1.30"  # the oldest release still widely run that these manifests target
MANIFESTS = sorted(p for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def resources() -> dict[str, dict[str, Any]]:
    """Every resource of the manifests, by kind (one of each here)."""
    out = {}
    for path in MANIFESTS:
        for doc in docs(path):
            assert doc["kind"] not in out, f"two {doc['kind']} resources"
            out[doc["kind"]] = doc
    return out


def validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def container(res: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    spec = (res or resources())["StatefulSet"]["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    c: dict[str, Any] = spec["containers"][0]
    return c


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_each_manifest_is_valid_against_the_kubernetes_schemas(path: Path) -> None:
    found = docs(path)
    assert found, f"{path} has no resource"
    for doc in found:
        validate(doc)


def test_the_kustomization_lists_every_manifest() -> None:
    (kust,) = docs(KUBE / "kustomization.yaml")
    assert kust["kind"] == "Kustomization"
    assert sorted(kust["resources"]) == [p.name for p in MANIFESTS]
    assert [i["name"] for i in kust["images"]] == [container()["image"]]


def _break_replicas(res: dict[str, Any]) -> None:
    res["StatefulSet"]["spec"]["replicas"] = "three"


def _break_field_name(res: dict[str, Any]) -> None:
    res["StatefulSet"]["spec"]["template"]["spec"]["containres"] = res["StatefulSet"]["spec"]["template"]["spec"].pop(
        "containers"
    )


def _break_probe(res: dict[str, Any]) -> None:
    container(res)["readinessProbe"]["httpGet"]["pathh"] = "/v1/health"


def _break_service(res: dict[str, Any]) -> None:
    res["Service"]["spec"]["ports"][0]["protocol"] = 17


def _break_pdb(res: dict[str, Any]) -> None:
    del res["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    res["PodDisruptionBudget"]["spec"]["selector"]["matchLabel"] = {"a": "b"}


def _break_env(res: dict[str, Any]) -> None:
    container(res)["env"][0]["valueFrom"]["fieldRef"] = "metadata.name"


BROKEN = {
    "replicas-a-string": ("StatefulSet", _break_replicas),
    "misspelled-containers": ("StatefulSet", _break_field_name),
    "unknown-probe-field": ("StatefulSet", _break_probe),
    "protocol-a-number": ("Service", _break_service),
    "misspelled-matchLabels": ("PodDisruptionBudget", _break_pdb),
    "fieldRef-a-string": ("StatefulSet", _break_env),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_validator_catches_a_broken_copy(case: str) -> None:
    kind, breaker = BROKEN[case]
    broken = copy.deepcopy(resources())
    breaker(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken[kind])


def test_the_headless_service_publishes_pods_that_are_not_ready_yet() -> None:
    res = resources()
    svc, sts = res["Service"], res["StatefulSet"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for selector in (svc["spec"]["selector"], sts["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert res["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {(p["name"], p["protocol"], p["port"]) for p in svc["spec"]["ports"]}
    assert ports == {("chatter", "UDP", 2428), ("http", "TCP", 2428)}  # SRV: _chatter._udp.chatter.NS.svc...
    names = {p["name"] for p in container(res)["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= names


def test_the_statefulset_runs_three_nodes_that_leave_gracefully_and_are_probed_on_health() -> None:
    res = resources()
    sts = res["StatefulSet"]["spec"]
    assert sts["replicas"] == 3 and sts["podManagementPolicy"] == "Parallel"
    assert res["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    c = container(res)
    assert "command" not in c  # the image's entrypoint: tini, then chatterd
    assert c["lifecycle"]["preStop"]["exec"]["command"][:2] == ["chatterd", "leave"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v1/health", "port": "http"}
    assert "/v1/health" in " ".join(c["livenessProbe"]["exec"]["command"])
    assert {v["metadata"]["name"] for v in sts["volumeClaimTemplates"]} == {"data"}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["data"] == "/var/lib/chatterd"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]


def test_the_pods_run_unprivileged_on_a_read_only_root() -> None:
    res = resources()
    pod = res["StatefulSet"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    sc = container(res)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


def test_the_key_and_the_token_come_from_a_secret_that_is_not_committed() -> None:
    c = container()
    env = {e["name"]: e for e in c["env"]}
    assert env["CHATTER_ENCRYPT_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "chatter-secrets"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    token = next(m for m in c["volumeMounts"] if m["name"] == "secrets")
    assert token.get("subPath") == "http-token"  # a regular file: the token reader refuses symlinks
    assert "Secret" not in resources()
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert secret_like(path.read_text()) == [], f"{path} holds something like a key or a token"


def secret_like(text: str) -> list[str]:
    """Runs of base64 or URL-safe characters long enough to be a key (chatterd keygen: 44) or a
    token (43) and mixing digits, capitals and small letters as random ones do; prose does not."""
    runs = re.findall(r"[A-Za-z0-9+/_-]{20,}=*", text)
    return [r for r in runs if all(re.search(cls, r) for cls in ("[0-9]", "[A-Z]", "[a-z]"))]


def test_the_secret_finder_finds_a_key_and_a_token() -> None:
    assert secret_like('encrypt = "3ELWUulQ41HA5AFaA9xXsD/8T7uIbcGtwxLDLdRffj4="') == [
        "3ELWUulQ41HA5AFaA9xXsD/8T7uIbcGtwxLDLdRffj4="
    ]
    assert secret_like("token: kq7Vd2yQn1_xTzY8pL-4sR0wE6uJ3aHbC9mN5oI2fGh") != []
    assert secret_like("preferredDuringSchedulingIgnoredDuringExecution, readOnlyRootFilesystem") == []


def test_the_configmap_and_the_pods_arguments_parse_as_chatterd_options(tmp_path: Path) -> None:
    import tomllib

    text = resources()["ConfigMap"]["data"]["chatterd.toml"]
    ns = namespace_from_table(tomllib.loads(text), "the ConfigMap")
    assert ns.http == "0.0.0.0:2428" and ns.data_dir == Path("/var/lib/chatterd")
    config = tmp_path / "chatterd.toml"
    config.write_text(text)
    values = {"POD_NAME": "chatter-1", "POD_NAMESPACE": "chatter", "POD_IP": "10.1.2.3"}
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in container()["args"]]
    args = [f"--config={config}" if a.startswith("--config=") else a for a in args]
    assert any(a.startswith("--join=dns+chatter.chatter.svc.cluster.local:") for a in args)
    got = parse_daemon_args(args)
    assert got.name == "chatter-1" and got.advertise == ("10.1.2.3", 2428)
    assert got.http_token_file == Path("/etc/chatterd-secrets/http-token")
    assert got.listen == ("0.0.0.0", 2428) and got.log_format == "json"  # from the ConfigMap


def unit() -> dict[str, dict[str, list[str]]]:
    """The unit file's settings, section -> key -> values (systemd allows a key many times)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for n, line in enumerate(UNIT.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None and not line.endswith("\\"), f"{UNIT}:{n}: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    (value,) = section[key]
    return value


def test_the_systemd_unit_has_the_settings_chatterd_needs() -> None:
    u = unit()
    svc = u["Service"]
    assert one(svc, "Type") == "simple"
    assert one(svc, "Restart") == "on-failure" and one(svc, "RestartPreventExitStatus") == "2"
    assert one(svc, "KillSignal") == "SIGTERM" and float(one(svc, "TimeoutStopSec")) > 0
    assert one(svc, "StateDirectory") == "chatterd" and one(svc, "DynamicUser") == "yes"
    assert one(svc, "EnvironmentFile").lstrip("-") == "/etc/chatterd/chatterd.env"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert one(svc, key) == value, key
    assert "AF_INET" in one(svc, "RestrictAddressFamilies").split()
    assert "PrivateNetwork" not in svc and "IPAddressDeny" not in svc  # it is a network daemon
    assert one(u["Install"], "WantedBy") == "multi-user.target"


def test_the_units_command_line_with_the_example_config_parses() -> None:
    argv = shlex.split(one(unit()["Service"], "ExecStart"))
    assert argv[:2] == ["/usr/bin/env", "chatterd"]
    assert argv[argv.index("--config") + 1] == "/etc/chatterd/chatterd.toml"
    assert argv[argv.index("--data-dir") + 1] == "/var/lib/chatterd"  # the StateDirectory
    args = [str(DEPLOY / "chatterd.toml") if a == "/etc/chatterd/chatterd.toml" else a for a in argv[2:]]
    got = parse_daemon_args(args)
    assert got.data_dir == Path("/var/lib/chatterd") and got.label == "prod"
    assert got.rejoin  # a restart (a graceful leave, then a start) rejoins the saved peers
