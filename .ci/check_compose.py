"""Structural checks of docker-compose.yml beyond the Compose schema.

    python .ci/check_compose.py [docker-compose.yml]

Every service has a health check; the app services start after a successful migrate and
healthy postgres/redis; workers can be scaled (no container_name, no published ports);
.env is optional; Redis persists with an append-only file on a named volume; the only way in
is the nginx `proxy` (web publishes no port), which renders deploy/nginx's template read-only
with every variable the template uses.
"""

import re
import sys
from pathlib import Path

import yaml

APP = ("web", "worker", "delivery-worker", "scheduler")
REQUIRED = (*APP, "migrate", "postgres", "redis", "proxy")
TEMPLATE = "deploy/nginx/conversations.conf.template"


def proxy_problems(services, root):
    web = services.get("web") or {}
    proxy = services.get("proxy") or {}
    if "ports" in web:
        yield "web: publishes a port; only the proxy may (slow senders would reach gunicorn)"
    if not proxy:
        return
    if not proxy.get("ports"):
        yield "proxy: publishes no port"
    condition = ((proxy.get("depends_on") or {}).get("web") or {}).get("condition")
    if condition != "service_healthy":
        yield f"proxy: depends_on web should be service_healthy, is {condition}"
    mounts = [v for v in proxy.get("volumes") or [] if isinstance(v, str)]
    mount = next((v for v in mounts if v.split(":")[0].lstrip("./") == TEMPLATE), None)
    if not mount or not mount.split(":")[1].startswith("/etc/nginx/templates/"):
        yield f"proxy: {TEMPLATE} is not mounted into /etc/nginx/templates/"
    elif not mount.endswith(":ro"):
        yield "proxy: the template must be mounted read-only"
    template = root / TEMPLATE
    if template.exists():
        environment = proxy.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for name in sorted(set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", template.read_text()))):
            if name not in environment:
                yield f"proxy: the template uses ${{{name}}}, which the environment does not set"


def problems(compose, root=Path(".")):
    services = compose.get("services") or {}
    volumes = compose.get("volumes") or {}
    for name in REQUIRED:
        if name not in services:
            yield f"service {name!r} is missing"
    for name, service in services.items():
        check = service.get("healthcheck") or {}
        if check.get("disable") or not check.get("test"):
            yield f"{name}: no healthcheck test"
    expected = {
        "migrate": "service_completed_successfully",
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }
    for name in (*APP, "migrate"):
        depends = (services.get(name) or {}).get("depends_on") or {}
        if not isinstance(depends, dict):
            yield f"{name}: depends_on must be the long form, with conditions"
            continue
        wanted = expected if name != "migrate" else {"postgres": "service_healthy"}
        for dep, condition in wanted.items():
            got = (depends.get(dep) or {}).get("condition")
            if got != condition:
                yield f"{name}: depends_on {dep} should be {condition}, is {got}"
    for name in (*APP, "migrate"):
        env_files = (services.get(name) or {}).get("env_file") or []
        if not any(
            isinstance(f, dict) and f.get("path") == ".env" and f.get("required") is False
            for f in env_files
        ):
            yield f"{name}: env_file .env with required: false is missing"
    worker = services.get("worker") or {}
    for key in ("container_name", "ports"):
        if key in worker:
            yield f"worker: {key} prevents --scale worker=N"
    migrate = services.get("migrate") or {}
    if migrate.get("restart") not in ("no", None):
        yield "migrate: a one-shot service must not restart"
    redis = services.get("redis") or {}
    if "appendonly" not in " ".join(map(str, redis.get("command") or [])):
        yield "redis: appendonly persistence is not enabled"
    for name in ("postgres", "redis"):
        for volume in (services.get(name) or {}).get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if source not in volumes:
                yield f"{name}: volume {source!r} is not a named volume"
    yield from proxy_problems(services, root)
    if "dashboard" in services and "dashboard" not in (services["dashboard"].get("profiles") or []):
        yield "dashboard: must be behind the 'dashboard' profile"


def main(path):
    with open(path) as f:
        compose = yaml.safe_load(f)
    found = list(problems(compose, Path(path).resolve().parent))
    for problem in found:
        print(f"compose check: {problem}", file=sys.stderr)
    if found:
        return 1
    print(f"compose check: {path} OK ({', '.join(compose['services'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docker-compose.yml"))
