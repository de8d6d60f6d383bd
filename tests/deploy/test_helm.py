"""The Helm chart lints, renders, validates against the Kubernetes API schemas and follows our policies.

Rendering and linting go through Helm's own Go SDK (the `helm-python-sdk` wheel: no `helm` binary);
validation uses `kubernetes-validate` (offline schemas) for every supported Kubernetes version. The
kubectl manifests in deploy/k8s are rendered from the same chart and must match a fresh render.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from wxbot_analytics.settings import AnalyticsSettings
from wxbot_common.nats.topology import NLP_DRAFTER
from wxbot_console.settings import ConsoleSettings
from wxbot_context.settings import ContextSettings
from wxbot_devkit import manifests
from wxbot_gateway.settings import GatewaySettings
from wxbot_nlp.settings import NlpSettings
from wxbot_safety.settings import SafetySettings
from wxbot_skills.reminders.book import DUE_ACK_WAIT_S
from wxbot_skills.settings import SkillsSettings

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
CHART = manifests.CHART
K8S_VERSIONS = ("1.30.0", "1.31.0", "1.32.0", "1.33.0")
SERVICES = ("gateway", "safety", "nlp", "context", "skills", "console")
PROFILES = ("default", "dev", "prod")
Doc = dict[str, Any]
# Prometheus Operator and Traefik kinds: not in the Kubernetes schemas, checked by shape instead.
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "AlertmanagerConfig", "TLSOption", "Middleware"}


def profile_values(profile: str) -> dict[str, Any] | None:
    if profile == "default":
        return None
    values: dict[str, Any] = yaml.safe_load(manifests.values_file(profile).read_text())
    return values


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {profile: manifests.render(profile_values(profile)) for profile in PROFILES}


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    return next(d for d in of_kind(docs, kind) if d["metadata"]["name"] == name)


def component(doc: Doc) -> str:
    return str(doc["metadata"].get("labels", {}).get("app.kubernetes.io/name", ""))


def service_deployments(docs: list[Doc]) -> list[Doc]:
    return [d for d in of_kind(docs, "Deployment") if component(d) in SERVICES]


def pod_specs(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


def every_option_on() -> dict[str, Any]:
    """Values that switch on every optional part, so the policies see all of it."""
    return {
        "namespace": {"create": True},
        "secrets": {"values": {"WECOM_SECRET": "s", "LLM_API_KEY": "k", "CLICKHOUSE_PASSWORD": "c1ickhouse-pass"}},
        "jaeger": {"enabled": True},
        "ingress": {
            "enabled": True,
            "callbackHost": "bot.example.com",
            "consoleHost": "console.example.com",
            "tls": {"secretName": "bot-tls"},
        },
        "monitoring": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "alertmanagerConfig": {"enabled": True, "webhookUrl": "https://alerts.example.com/hook"},
        },
        "modelServer": {"enabled": True, "model": {"url": "https://models.example.com/m.gguf"}},
        "analytics": {"enabled": True},
        "clickhouse": {"enabled": True},
        "delivery": {"enabled": True},
    }


# --- lint and render ---------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_the_chart_lints_clean(profile: str) -> None:
    for version in K8S_VERSIONS:
        report = helm_python.lint(CHART, profile_values(profile), strict=True, kube_version=f"v{version}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, (version, report)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_object_is_valid_for_each_supported_kubernetes(rendered: dict[str, list[Doc]], profile: str) -> None:
    docs = rendered[profile]
    assert {d["kind"] for d in docs} >= {
        "Deployment",
        "StatefulSet",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceAccount",
        "ConfigMap",
        "Job",
        "NetworkPolicy",
    }
    for version in K8S_VERSIONS:
        for doc in docs:
            if doc["kind"] not in CUSTOM_KINDS:
                kubernetes_validate.validate(doc, version, strict=True)  # raises on any violation


def test_every_option_renders_valid_objects() -> None:
    docs = manifests.render(every_option_on())
    kinds = {d["kind"] for d in docs}
    assert kinds >= {"Namespace", "Ingress", "PersistentVolumeClaim", "Secret"} | (
        CUSTOM_KINDS - {"TLSOption", "Middleware"}
    )
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"].startswith("monitoring.coreos.com/") and doc["spec"], doc["kind"]
        else:
            kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_validation_really_rejects_a_broken_manifest(rendered: dict[str, list[Doc]]) -> None:
    broken = copy.deepcopy(service_deployments(rendered["default"])[0])
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


# --- scaling -----------------------------------------------------------------------------------


def test_setting_one_services_replicas_changes_only_that_service(rendered: dict[str, list[Doc]]) -> None:
    before = {(d["kind"], d["metadata"]["name"]): d for d in rendered["default"]}
    after = {(d["kind"], d["metadata"]["name"]): d for d in manifests.render({"nlp": {"replicas": 5}})}
    assert before.keys() == after.keys()
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {("Deployment", "wxbot-nlp"), ("HorizontalPodAutoscaler", "wxbot-nlp")}
    assert after[("Deployment", "wxbot-nlp")]["spec"]["replicas"] == 5
    assert after[("HorizontalPodAutoscaler", "wxbot-nlp")]["spec"]["minReplicas"] == 5


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_scales_on_its_own(rendered: dict[str, list[Doc]], service: str) -> None:
    docs = rendered["prod"]
    deployment = named(docs, "Deployment", f"wxbot-{service}")
    hpa = named(docs, "HorizontalPodAutoscaler", f"wxbot-{service}")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["maxReplicas"] == (4 if service == "console" else 20)
    pdb = named(docs, "PodDisruptionBudget", f"wxbot-{service}")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    selectors = [d["spec"]["selector"]["matchLabels"] for d in service_deployments(docs)]
    assert selectors.count(deployment["spec"]["selector"]["matchLabels"]) == 1


# --- policies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_every_service_has_probes_limits_a_hardened_context_an_hpa_and_a_pdb(
    rendered: dict[str, list[Doc]], profile: str
) -> None:
    docs = rendered[profile]
    deployments = service_deployments(docs)
    assert sorted(component(d) for d in deployments) == sorted(SERVICES)
    for d in deployments:
        name = d["metadata"]["name"]
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == name
        for c in pod["containers"]:
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert "startupProbe" in c
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]) & set(c["resources"]["requests"])
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]


def test_every_pod_of_every_option_is_hardened_limited_and_probed() -> None:
    for where, pod in pod_specs(manifests.render(every_option_on())):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in pod["containers"] + pod.get("initContainers", []):
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where
        if not where.startswith("Job/"):
            for c in pod["containers"]:
                assert "livenessProbe" in c and "readinessProbe" in c, where


def test_images_are_pinned_never_latest() -> None:
    for where, pod in pod_specs(manifests.render(every_option_on())):
        for c in pod["containers"] + pod.get("initContainers", []):
            image = c["image"]
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            assert "@sha256:" in image or (tag and tag != "latest" and any(ch.isdigit() for ch in tag)), where


def test_nlp_outlives_its_ack_wait_and_skills_their_reminders(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod"]
    nlp = named(docs, "Deployment", "wxbot-nlp")["spec"]["template"]["spec"]
    assert nlp["terminationGracePeriodSeconds"] > NLP_DRAFTER.ack_wait_s
    skills = named(docs, "Deployment", "wxbot-skills")["spec"]["template"]
    assert skills["spec"]["terminationGracePeriodSeconds"] > DUE_ACK_WAIT_S
    assert skills["metadata"]["labels"]["wxbot.io/role"] == "skill"


def test_nats_runs_a_version_with_message_schedules(rendered: dict[str, list[Doc]]) -> None:
    nats = named(rendered["default"], "StatefulSet", "wxbot-nats")
    image = nats["spec"]["template"]["spec"]["containers"][0]["image"]
    major, minor = (int(p) for p in image.split(":")[1].split(".")[:2])
    assert (major, minor) >= (2, 14) and image.endswith("-alpine"), image


def egress_peers(policy: Doc) -> list[tuple[Doc, list[Any]]]:
    return [
        (peer, [p["port"] for p in rule.get("ports", [])]) for rule in policy["spec"]["egress"] for peer in rule["to"]
    ]


def selects(peer: Doc, name: str) -> bool:
    return bool(peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == name)


@pytest.mark.parametrize("profile", PROFILES)
def test_network_policies_deny_by_default_and_cover_every_pod(rendered: dict[str, list[Doc]], profile: str) -> None:
    docs = rendered[profile]
    policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    deny = policies["wxbot-default-deny"]["spec"]
    assert deny["podSelector"] == {"matchLabels": {"app.kubernetes.io/instance": "wxbot"}}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny
    assert {p["port"] for p in policies["wxbot-allow-dns"]["spec"]["egress"][0]["ports"]} == {53}
    # Every workload has a policy of its own that selects it.
    for kind in ("Deployment", "StatefulSet", "Job"):
        for d in of_kind(docs, kind):
            labels = d["spec"]["template"]["metadata"]["labels"]
            own = [
                p
                for p in policies.values()
                if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
                == labels["app.kubernetes.io/name"]
            ]
            assert own, f"{kind}/{d['metadata']['name']} has no policy of its own"


def test_network_flows_are_exactly_the_pipelines(rendered: dict[str, list[Doc]]) -> None:
    policies = {p["metadata"]["name"]: p for p in of_kind(manifests.render(every_option_on()), "NetworkPolicy")}
    nlp = egress_peers(policies["wxbot-nlp"])
    assert any(selects(peer, "context") and ports == [50051] for peer, ports in nlp)
    assert any(peer.get("podSelector", {}).get("matchLabels") == {"wxbot.io/role": "skill"} for peer, _ in nlp)
    assert any(selects(peer, "model") for peer, _ in nlp), "nlp cannot reach the in-cluster model server"
    context_in = policies["wxbot-context"]["spec"]["ingress"]
    grpc_from = [peer for rule in context_in if [p["port"] for p in rule["ports"]] == [50051] for peer in rule["from"]]
    assert len(grpc_from) == 1 and selects(grpc_from[0], "nlp")
    for quiet in ("safety", "context"):  # no way out of the cluster
        assert all("ipBlock" not in peer for peer, _ in egress_peers(policies[f"wxbot-{quiet}"])), quiet
    # With an Ingress, callbacks come only from the controller's namespace.
    gateway_in = policies["wxbot-gateway"]["spec"]["ingress"]
    assert all("ipBlock" not in peer for rule in gateway_in for peer in rule["from"])
    skill_in = policies["wxbot-skill-role"]["spec"]["ingress"]
    assert [selects(peer, "nlp") for rule in skill_in for peer in rule["from"]] == [True]
    assert policies["wxbot-nats"]["spec"]["egress"] == [] and policies["wxbot-redis"]["spec"]["egress"] == []


def env_of(deployment: Doc) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_reply_delivery_is_a_component_of_its_own_when_asked_for(rendered: dict[str, list[Doc]]) -> None:
    # Off by default: every gateway pod answers callbacks and sends replies (GATEWAY_ROLE=all).
    for profile in PROFILES:
        assert all(component(d) != "delivery" for d in rendered[profile])
        assert "GATEWAY_ROLE" not in env_of(named(rendered[profile], "Deployment", "wxbot-gateway"))
    docs = manifests.render({"delivery": {"enabled": True, "replicas": 3}})
    gateway, delivery = named(docs, "Deployment", "wxbot-gateway"), named(docs, "Deployment", "wxbot-delivery")
    assert env_of(gateway)["GATEWAY_ROLE"] == "ingress" and env_of(delivery)["GATEWAY_ROLE"] == "delivery"
    assert GatewaySettings(gateway_role=env_of(delivery)["GATEWAY_ROLE"]).gateway_role == "delivery"
    # The gateway's image and service name (its spans are the gateway's), scaled and disrupted on its own.
    image = delivery["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == gateway["spec"]["template"]["spec"]["containers"][0]["image"]
    assert env_of(delivery)["OTEL_SERVICE_NAME"] == "gateway" and delivery["spec"]["replicas"] == 3
    hpa = named(docs, "HorizontalPodAutoscaler", "wxbot-delivery")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "wxbot-delivery"
    assert delivery["spec"]["selector"]["matchLabels"] != gateway["spec"]["selector"]["matchLabels"]
    # Nothing outside reaches delivery (monitoring and the console read its ops port); it reaches
    # WeCom, NATS and Redis; callbacks still go to the gateway pods alone.
    policies = {p["metadata"]["name"]: p for p in of_kind(manifests.render(every_option_on()), "NetworkPolicy")}
    delivery_in = policies["wxbot-delivery"]["spec"]["ingress"]
    assert all("ipBlock" not in peer for rule in delivery_in for peer in rule["from"])
    assert all(8080 in [p["port"] for p in rule["ports"]] for rule in delivery_in)
    out = egress_peers(policies["wxbot-delivery"])
    assert any(peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" and 443 in ports for peer, ports in out)
    for infra in ("nats", "redis"):
        allowed = policies[f"wxbot-{infra}"]["spec"]["ingress"][0]["from"]
        assert any(selects(peer, "delivery") for peer in allowed), infra
    callbacks = next(d for d in of_kind(manifests.render(every_option_on()), "Ingress") if d["spec"].get("rules"))
    backends = {p["backend"]["service"]["name"] for r in callbacks["spec"]["rules"] for p in r["http"]["paths"]}
    assert "wxbot-delivery" not in backends


def test_analytics_is_off_by_default_and_reaches_only_nats_the_collector_and_clickhouse(
    rendered: dict[str, list[Doc]],
) -> None:
    assert all(component(d) != "analytics" for profile in PROFILES for d in rendered[profile])
    external = every_option_on() | {"clickhouse": {"enabled": False}}
    docs = manifests.render(external)
    assert not [d for d in docs if component(d) == "clickhouse"]
    deployment = named(docs, "Deployment", "wxbot-analytics")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ANALYTICS_PORT"] == "8085" and container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert set(env) <= {name.upper() for name in AnalyticsSettings.model_fields} | {
        "OTEL_SERVICE_NAME",
        "POD_NAME",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    }
    policy = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}["wxbot-analytics"]
    outside = [ports for peer, ports in egress_peers(policy) if "ipBlock" in peer]
    assert outside == [[8123, 8443]]  # the ClickHouse server, nothing else outside the cluster


def test_the_bundled_clickhouse_serves_analytics_only_and_needs_a_url_safe_password() -> None:
    docs = manifests.render(every_option_on())
    clickhouse = named(docs, "StatefulSet", "wxbot-clickhouse")
    pod = clickhouse["spec"]["template"]["spec"]
    password = next(e for e in pod["containers"][0]["env"] if e["name"] == "CLICKHOUSE_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "wxbot-secrets", "key": "CLICKHOUSE_PASSWORD"}
    analytics = named(docs, "Deployment", "wxbot-analytics")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in analytics["env"]}
    names = [e["name"] for e in analytics["env"]]
    assert names.index("CLICKHOUSE_PASSWORD") < names.index("ANALYTICS_CLICKHOUSE_URL")  # $(…) needs it first
    assert env["ANALYTICS_CLICKHOUSE_URL"]["value"] == "http://wxbot:$(CLICKHOUSE_PASSWORD)@wxbot-clickhouse:8123/wxbot"
    policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    egress = egress_peers(policies["wxbot-analytics"])
    assert any(selects(peer, "clickhouse") and ports == [8123] for peer, ports in egress)
    assert not [ports for peer, ports in egress if "ipBlock" in peer]
    ingress = policies["wxbot-clickhouse"]["spec"]
    assert ingress["egress"] == [] and selects(ingress["ingress"][0]["from"][0], "analytics")
    with pytest.raises(helm_python.HelmError, match="CLICKHOUSE_PASSWORD"):
        manifests.render({"analytics": {"enabled": True}, "clickhouse": {"enabled": True}})
    with pytest.raises(helm_python.HelmValuesError, match="CLICKHOUSE_PASSWORD"):
        manifests.render({"secrets": {"values": {"CLICKHOUSE_PASSWORD": "p@ss/word#1234"}}})


def test_the_console_reads_every_service_and_is_reached_only_through_the_ingress_controller(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["prod"]
    policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    console_in = policies["wxbot-console"]["spec"]["ingress"]
    assert all("namespaceSelector" in peer for rule in console_in for peer in rule["from"])
    reached = egress_peers(policies["wxbot-console"])
    for service, port in (("gateway", 8080), ("safety", 8081), ("nlp", 8082), ("context", 8083), ("skills", 8084)):
        assert any(selects(peer, service) and ports == [port] for peer, ports in reached), service
        ingress = policies[f"wxbot-{service}"]["spec"]["ingress"]
        assert any(
            selects(peer, "console") and [p["port"] for p in rule["ports"]] == [port]
            for rule in ingress
            for peer in rule["from"]
        ), service
    config = named(docs, "ConfigMap", "wxbot-config")["data"]
    assert config["GATEWAY_URL"] == "http://wxbot-gateway:8080"
    assert "nlp=http://wxbot-nlp:8082" in config["CONSOLE_SERVICES"].split(",")


def test_external_nats_and_redis_need_their_url_and_are_reached_by_address() -> None:
    with pytest.raises(helm_python.HelmError, match=r"nats\.url is required"):
        manifests.render({"nats": {"enabled": False}})
    docs = manifests.render(
        {
            "nats": {"enabled": False, "url": "nats://nats.infra:4222"},
            "redis": {"enabled": False, "url": "rediss://r.infra:6380/0"},
        }
    )
    assert not of_kind(docs, "StatefulSet")
    config = named(docs, "ConfigMap", "wxbot-config")["data"]
    assert config["NATS_URL"] == "nats://nats.infra:4222" and config["REDIS_URL"] == "rediss://r.infra:6380/0"
    safety = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}["wxbot-safety"]
    assert any("ipBlock" in peer and 4222 in ports for peer, ports in egress_peers(safety))


def test_ingress_has_tls_redirects_http_and_exposes_only_the_callbacks(rendered: dict[str, list[Doc]]) -> None:
    ingress = of_kind(rendered["prod"], "Ingress")[0]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
    assert ingress["spec"]["tls"] == [{"hosts": ["bot.example.com"], "secretName": "wxbot-ingress-tls"}]
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert "/wecom/callback" in paths and not [p for p in paths if p in ("/", "/metrics")]
    traefik = manifests.render(
        {
            "ingress": {
                "enabled": True,
                "className": "traefik",
                "callbackHost": "bot.example.com",
                "tls": {"secretName": "t"},
            }
        }
    )
    assert named(traefik, "TLSOption", "wxbot-tls")["spec"]["minVersion"] == "VersionTLS12"
    assert named(traefik, "Middleware", "wxbot-https-redirect")["spec"]["redirectScheme"]["scheme"] == "https"
    with pytest.raises(helm_python.HelmError, match=r"ingress\.tls"):
        manifests.render({"ingress": {"enabled": True, "callbackHost": "bot.example.com"}})


def test_monitoring_objects_follow_the_operator_and_carry_the_rules_and_dashboards(
    rendered: dict[str, list[Doc]],
) -> None:
    assert not of_kind(rendered["default"], "ServiceMonitor"), "auto renders nothing without the operator's API"
    prod = rendered["prod"]
    assert {component(m) for m in of_kind(prod, "ServiceMonitor")} == set(SERVICES)
    rules = of_kind(prod, "PrometheusRule")[0]["spec"]["groups"][0]["rules"]
    assert "WxbotDeliveryGaveUp" in {r["alert"] for r in rules}
    assert any("{{ $labels.channel }}" in r["annotations"]["summary"] for r in rules)  # Prometheus' templates kept
    dashboard = next(
        c for c in of_kind(prod, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    )
    assert json.loads(next(iter(dashboard["data"].values())))["panels"]
    amc = next(d for d in manifests.render(every_option_on()) if d["kind"] == "AlertmanagerConfig")
    assert amc["spec"]["receivers"][0]["webhookConfigs"][0]["url"] == "https://alerts.example.com/hook"


def test_the_local_model_server_becomes_the_llm() -> None:
    docs = manifests.render(every_option_on())
    assert named(docs, "ConfigMap", "wxbot-config")["data"]["LLM_BASE_URL"] == "http://wxbot-model:8080/v1"
    model = named(docs, "Deployment", "wxbot-model")["spec"]["template"]["spec"]
    assert model["volumes"][0]["persistentVolumeClaim"]["claimName"] == "wxbot-model"
    assert model["initContainers"][0]["env"][1]["value"] == "https://models.example.com/m.gguf"


# --- values and secrets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nlp": {"replicas": "five"}}, "/nlp/replicas"),
        ({"nlp": {"replicas": -1}}, "/nlp/replicas"),
        ({"nlp": {"replica": 5}}, "'replica' not allowed"),
        ({"gatway": {"replicas": 2}}, "'gatway' not allowed"),
        ({"nats": {"image": {"repository": "nats", "tag": "latest"}}}, "/nats/image/tag"),
        ({"config": {"LLM_API_KEY": "sk-123"}}, "LLM_API_KEY"),
        ({"ingress": {"callbackHost": "https://bot.example.com/"}}, "/ingress/callbackHost"),
        ({"ingress": {"tls": {"minVersion": "1.0"}}}, "/ingress/tls/minVersion"),
        ({"redis": {"url": "http://redis:6379"}}, "/redis/url"),
        ({"safety": {"resources": {"limits": {"cpu": "lots"}}}}, "/safety/resources"),
    ],
)
def test_the_schema_rejects_wrong_values_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as raised:
        manifests.render(values)
    assert message in str(raised.value)


def test_secrets_come_from_an_existing_secret_or_from_values(rendered: dict[str, list[Doc]]) -> None:
    created = manifests.render({"secrets": {"values": {"WECOM_SECRET": "s3cret"}}})
    assert named(created, "Secret", "wxbot-secrets")["stringData"] == {"WECOM_SECRET": "s3cret"}
    existing = manifests.render({"secrets": {"existingSecret": "mine"}})
    assert not of_kind(existing, "Secret")
    for d in service_deployments(existing):
        refs = d["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"secretRef": {"name": "mine"}} in refs
    config = named(rendered["prod"], "ConfigMap", "wxbot-config")["data"]
    assert not [k for k in config if k.endswith(("SECRET", "TOKEN", "_KEY"))]


def test_every_configured_variable_is_one_a_service_reads(rendered: dict[str, list[Doc]]) -> None:
    known = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME", "POD_NAME"}
    for settings in (GatewaySettings, SafetySettings, NlpSettings, ContextSettings, SkillsSettings, ConsoleSettings):
        known |= {name.upper() for name in settings.model_fields}
    for profile in PROFILES:
        docs = rendered[profile]
        names = set(named(docs, "ConfigMap", "wxbot-config")["data"])
        for d in service_deployments(docs):
            names |= {e["name"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert not names - known, f"{profile}: no service reads {sorted(names - known)}"


# --- one source of truth -----------------------------------------------------------------------


def test_the_kubectl_manifests_are_the_chart_rendered() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wxbot_devkit.manifests", "--check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    git = subprocess.run(["git", "ls-files", "deploy"], cwd=ROOT, capture_output=True, text=True, check=True)
    tracked = git.stdout.split()
    for f in tracked:
        if f.endswith((".yaml", ".yml")) and "/templates/" not in f:
            for doc in yaml.safe_load_all((ROOT / f).read_text()):
                assert not (isinstance(doc, dict) and doc.get("kind") == "Secret"), f"{f} holds a Secret"


def test_kustomize_renders_the_dev_path_on_a_fresh_clone() -> None:
    kubectl = Path(sys.executable).parent / "kubectl"
    for profile in ("dev", "prod"):
        proc = subprocess.run(
            [str(kubectl), "kustomize", str(ROOT / "deploy" / "k8s" / profile)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        assert (
            named(docs, "Namespace", "wxbot")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
            == "restricted"
        )
        assert all(d["metadata"].get("namespace") == "wxbot" for d in docs if d["kind"] != "Namespace")


def test_one_dockerfile_builds_every_service() -> None:
    assert not list(ROOT.glob("services/*/Dockerfile")), "one Dockerfile at the root, not one per service"
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG SERVICE" in text and "exec python -m wxbot_%s" in text
    for service in SERVICES:
        assert (ROOT / "services" / service / "pyproject.toml").exists()
        assert (ROOT / "services" / service / "src" / f"wxbot_{service}" / "__main__.py").exists()


def test_the_console_host_shares_the_ingress_and_its_certificate() -> None:
    docs = manifests.render(every_option_on())
    ingress = named(docs, "Ingress", "wxbot-ingress")["spec"]
    assert ingress["tls"] == [{"hosts": ["bot.example.com", "console.example.com"], "secretName": "bot-tls"}]
    (console,) = [r for r in ingress["rules"] if r["host"] == "console.example.com"]
    assert [p["backend"]["service"]["name"] for p in console["http"]["paths"]] == ["wxbot-console"]
    callback = next(r for r in ingress["rules"] if r["host"] == "bot.example.com")
    assert {p["backend"]["service"]["name"] for p in callback["http"]["paths"]} == {"wxbot-gateway"}
    assert named(docs, "ConfigMap", "wxbot-config")["data"]["CONSOLE_PUBLIC_URL"] == "https://console.example.com"
