"""deploy/kubernetes/ holds together where no schema looks (.ci/kubernetes.sh checks each object
against its schema): one app image, selectors that select, probes on paths the app serves and
the health checks compose runs, environment variables the app reads, the commands compose runs,
KEDA on the queue the worker serves, and non-root, read-only containers.

Read from the files with PyYAML, as kustomize would take them (kustomization.yaml's resources).
No services needed.
"""

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from service import create_app

ROOT = Path(__file__).resolve().parents[2]
DIR = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = yaml.safe_load((DIR / "kustomization.yaml").read_text())
OBJECTS = [
    obj
    for name in KUSTOMIZATION["resources"]
    if name.endswith(".yaml")
    for obj in yaml.safe_load_all((DIR / name).read_text())
    if obj
]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
APP_IMAGE = "conversations"
PROXY = "proxy"
# The compose service each Deployment or Job runs.
SERVICES = {
    "conversations-web": "web",
    "conversations-worker": "worker",
    "conversations-delivery-worker": "delivery-worker",
    "conversations-generation-worker": "generation-worker",
    "conversations-scheduler": "scheduler",
    "conversations-migrate": "migrate",
}


def of_kind(kind):
    return {obj["metadata"]["name"]: obj for obj in OBJECTS if obj["kind"] == kind}


def pod_specs():
    """{Deployment or Job name: its pod spec}."""
    return {
        name: obj["spec"]["template"]["spec"]
        for kind in ("Deployment", "Job")
        for name, obj in of_kind(kind).items()
    }


def containers(spec, init=True):
    return [*(spec.get("initContainers") or [] if init else []), *spec["containers"]]


def app_containers():
    """(pod name, container) of every container running the app's image."""
    return [
        (name, container)
        for name, spec in pod_specs().items()
        for container in containers(spec)
        if container["name"] != PROXY
    ]


def selects(selector, labels):
    return all(labels.get(key) == value for key, value in selector.items())


def test_the_kustomization_lists_every_manifest():
    listed = {name for name in KUSTOMIZATION["resources"] if name.endswith(".yaml")}
    present = {path.name for path in DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert "../nginx" in KUSTOMIZATION["resources"]


def test_every_process_of_compose_has_its_deployment_with_compose_s_command():
    specs = pod_specs()
    assert set(specs) == set(SERVICES)
    for name, service in SERVICES.items():
        (main,) = [c for c in specs[name]["containers"] if c["name"] != PROXY]
        assert main["args"] == COMPOSE[service]["command"], name
        assert "command" not in main, (
            f"{name}: keeps the image's entrypoint (waits for the services)"
        )


def test_every_app_container_runs_the_one_app_image_and_the_proxy_compose_s_nginx():
    assert [image["name"] for image in KUSTOMIZATION["images"]] == [APP_IMAGE]
    for name, container in app_containers():
        assert container["image"] == APP_IMAGE, f"{name}/{container['name']}"
    (proxy,) = [c for c in pod_specs()["conversations-web"]["containers"] if c["name"] == PROXY]
    assert proxy["image"] == COMPOSE["proxy"]["image"]


def test_selectors_select_their_pods():
    deployments = of_kind("Deployment")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"]["matchLabels"], labels), name
    for kind in ("Service", "PodDisruptionBudget"):
        for name, obj in of_kind(kind).items():
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            chosen = [
                other
                for other, deployment in deployments.items()
                if selects(selector, deployment["spec"]["template"]["metadata"]["labels"])
            ]
            assert chosen == [name], f"{kind} {name} selects {chosen}"
    assert set(of_kind("PodDisruptionBudget")) == set(deployments)
    (policy,) = of_kind("NetworkPolicy").values()
    web = deployments["conversations-web"]["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["spec"]["podSelector"]["matchLabels"], web)


def test_the_service_and_the_network_policy_lead_to_the_proxy_only():
    web = pod_specs()["conversations-web"]
    ports = {
        port["name"]: (container["name"], port["containerPort"])
        for container in web["containers"]
        for port in container.get("ports", [])
    }
    (service,) = of_kind("Service").values()
    assert [ports[port["targetPort"]][0] for port in service["spec"]["ports"]] == [PROXY]
    (policy,) = of_kind("NetworkPolicy").values()
    opened = [port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]]
    assert [ports[port][0] for port in opened] == [PROXY]
    proxy = next(c for c in web["containers"] if c["name"] == PROXY)
    env = {item["name"]: item.get("value") for item in proxy["env"]}
    gunicorn = next(c for c in web["containers"] if c["name"] == "web")
    port = {item["name"]: item.get("value") for item in gunicorn["env"]}["PORT"]
    assert env["PROXY_UPSTREAM"] == f"127.0.0.1:{port}"
    assert int(env["PROXY_LISTEN"]) == ports["http"][1]


def test_autoscalers_target_deployments_that_leave_replicas_to_them():
    deployments = of_kind("Deployment")
    targets = [hpa["spec"]["scaleTargetRef"] for hpa in of_kind("HorizontalPodAutoscaler").values()]
    targets += [so["spec"]["scaleTargetRef"] for so in of_kind("ScaledObject").values()]
    for target in targets:
        assert target.get("kind", "Deployment") == "Deployment"
        assert "replicas" not in deployments[target["name"]]["spec"], target["name"]
    assert deployments["conversations-scheduler"]["spec"]["replicas"] == 2


@pytest.fixture(scope="module")
def served_paths(tmp_path_factory):
    """Every route of the app (on an unused SQLite file: nothing is queried)."""
    database = f"sqlite:///{tmp_path_factory.mktemp('kubernetes') / 'unused.db'}"
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": database})
    return {rule.rule for rule in app.url_map.iter_rules()}


def test_web_probes_ask_paths_the_app_serves(served_paths):
    web = pod_specs()["conversations-web"]
    for container in web["containers"]:
        ports = {port["name"] for port in container.get("ports", [])}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(kind) or {}
            if "httpGet" in probe:
                assert probe["httpGet"]["path"] in served_paths
                assert probe["httpGet"]["port"] in ports
    gunicorn = next(c for c in web["containers"] if c["name"] == "web")
    assert gunicorn["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gunicorn["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_worker_and_scheduler_probes_run_compose_s_health_checks():
    specs = pod_specs()
    for name, service in SERVICES.items():
        if service in ("web", "migrate"):
            continue
        check = COMPOSE[service]["healthcheck"]["test"]
        assert check[0] == "CMD"
        (main,) = specs[name]["containers"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert main[kind]["exec"]["command"] == check[1:], f"{name} {kind}"


def variables_of_the_app():
    """The environment variables the app, gunicorn and the entrypoint read: env.example's names
    and the ones service/config.py reads."""
    example = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / "env.example").read_text(), re.M)
    config = re.findall(
        r'env(?:\.get\(|, )"([A-Z][A-Z0-9_]*)"', (ROOT / "service/config.py").read_text()
    )
    return set(example) | set(config)


def test_every_variable_set_is_one_the_app_reads():
    known = variables_of_the_app()
    (config,) = of_kind("ConfigMap").values()
    assert set(config["data"]) <= known
    (secret,) = [s for s in of_kind("Secret").values() if s["metadata"]["name"] == "conversations"]
    assert set(secret["stringData"]) <= known
    for name, container in app_containers():
        names = {item["name"] for item in container.get("env", [])}
        assert names <= known, f"{name}/{container['name']}: {names - known}"
        sources = {next(iter(source.values()))["name"] for source in container.get("envFrom", [])}
        assert sources == {"conversations"}, f"{name}/{container['name']}"


def test_the_proxy_sets_every_variable_of_its_template_and_no_other():
    template = (ROOT / "deploy/nginx/conversations.conf.template").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)\}", template))
    (proxy,) = [c for c in pod_specs()["conversations-web"]["containers"] if c["name"] == PROXY]
    names = {item["name"] for item in proxy["env"]}
    assert names == used | {"NGINX_ENVSUBST_FILTER"}
    assert set(COMPOSE["proxy"]["environment"]) == names
    nginx = yaml.safe_load((ROOT / "deploy/nginx/kustomization.yaml").read_text())
    assert nginx["configMapGenerator"][0]["files"] == ["conversations.conf.template"]


def test_keda_watches_the_queue_of_the_worker_it_scales():
    (scaled,) = of_kind("ScaledObject").values()
    target = of_kind("Deployment")[scaled["spec"]["scaleTargetRef"]["name"]]
    (worker,) = target["spec"]["template"]["spec"]["containers"]
    assert worker["args"] == ["flask", "worker"]  # the replies role: the queue named RQ_QUEUE
    (config,) = of_kind("ConfigMap").values()
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == f"rq:queue:{config['data']['RQ_QUEUE']}"
    secrets = of_kind("Secret")
    redis_url = urlsplit(secrets["conversations"]["stringData"]["REDIS_URL"])
    assert trigger["metadata"]["databaseIndex"] == redis_url.path.lstrip("/")
    (auth,) = of_kind("TriggerAuthentication").values()
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in secrets[ref["name"]]["stringData"]
    assert (
        secrets["conversations-keda-redis"]["stringData"]["address"]
        == redis_url.netloc.split("@")[-1]
    )


def test_every_container_is_non_root_with_a_read_only_root_filesystem():
    uid = int(re.search(r"useradd --uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))
    for name, spec in pod_specs().items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in containers(spec):
            context = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert context["runAsNonRoot"] is True, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert context["runAsUser"] != 0, where
            if container["name"] != PROXY:
                assert context["runAsUser"] == uid, where
            # /tmp is where gunicorn, prometheus_client and nginx write; an emptyDir.
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            volumes = {volume["name"]: volume for volume in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], where


def test_every_container_has_requests_and_a_memory_limit():
    for name, spec in pod_specs().items():
        for container in containers(spec):
            resources = container["resources"]
            where = f"{name}/{container['name']}"
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert "memory" in resources["limits"], where
