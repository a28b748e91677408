#!/usr/bin/env bash
# Container check, run from the repository root (CI: a clone at <tmp>/main, <tmp>/shared beside):
#   1. docker-compose.yml against the Compose schema, and .ci/check_compose.py;
#   2. `podman build` of the Dockerfile as the compose file's image (conversations:local; the
#      container sandbox stands in for Docker here), checked: non-root, no build tools, console;
#      the nginx stand-in of .ci/nginx/ as nginx:1.27-alpine (no registry is reachable);
#   3. the whole compose stack, docker-compose.yml unchanged, up with podman-compose as project
#      conversations-ci-<pid>, the proxy published on CI_COMPOSE_PORT; every request of the
#      check goes through it;
#   4. every container's own health check and /readyz; the seed payloads (scripts/replay seed)
#      and a message 5 s before its conversation (.ci/scenarios/held-5s.json), each answered
#      once, while the worker service is scaled to 2 (both registered: /readyz and their checks);
#   5. the Redis container stopped for 5 s while groups wait and a message arrives
#      (.ci/scenarios/redis-outage.json): every message answered exactly once in its group, and
#      every container up and healthy afterwards (restart policies);
#   6. JSON errors from the proxy (413) and from the image's gunicorn (414), a graceful stop of
#      every service, then `down -v --remove-orphans`, leaving no container, volume or network.
# On any failure (or Ctrl-C) the logs of the failing containers are printed and the project is
# taken down all the same. Prints PASS or FAIL last. Settings (defaults in brackets):
#   CI_COMPOSE_PORT [18080]   the host port the proxy publishes (WEB_PORT)
#   VENV [.venv]
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=localhost/conversations:local  # docker-compose.yml's `image:` of the app services
NGINX_IMAGE=docker.io/library/nginx:1.27-alpine  # the proxy's `image:`
PORT=${CI_COMPOSE_PORT:-18080}
BASE=http://127.0.0.1:$PORT
PROJECT=conversations-ci-$$
BIN=${VENV:-.venv}/bin
WORK=$(mktemp -d "${TMPDIR:-/tmp}/$PROJECT.XXXXXX")
COMPOSE_LOG=$WORK/podman-compose.log
STACK_UP=
JOBS=()
STEP="setup"
started=$SECONDS

say() { printf 'containers: %s\n' "$*"; }
step() { STEP=$1; say "== $1 ($((SECONDS - started)) s)"; }

# podman-compose on this project; its chatter (and podman 4.3's complaints about systemd, which
# runs no health check timers here) goes to a log printed on failure.
compose() {
  WEB_PORT=$PORT podman-compose -p "$PROJECT" "$@" >>"$COMPOSE_LOG" 2>&1
}

# Names of the project's containers, of one service when given.
containers() {
  local filter=(--filter "label=io.podman.compose.project=$PROJECT")
  [ -z "${1:-}" ] || filter+=(--filter "label=com.docker.compose.service=$1")
  podman ps -a "${filter[@]}" --format '{{.Names}}' | sort
}

service_of() { podman inspect --format '{{index .Config.Labels "com.docker.compose.service"}}' "$1"; }

# Whether a container is as it should be: migrate exited 0, any other running and healthy by
# its own compose health check (podman 4.3 runs none on its own here: `healthcheck run`).
container_ok() {
  local name=$1 state
  state=$(podman inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$name" 2>/dev/null) || return 1
  if [ "$(service_of "$name")" = migrate ]; then
    [ "$state" = "exited 0" ]
  else
    [ "${state%% *}" = running ] && podman healthcheck run "$name" >/dev/null 2>&1
  fi
}

# Wait (up to $1 s) until every container of the project is as it should be.
wait_all_ok() {
  local deadline=$((SECONDS + $1)) name bad
  while :; do
    bad=()
    for name in $(containers); do container_ok "$name" || bad+=("$name"); done
    [ ${#bad[@]} -gt 0 ] || return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "not running or not healthy after $1 s: ${bad[*]}"
      return 1
    fi
    sleep 0.5
  done
}

print_failing_logs() {
  local name failing=()
  for name in $(containers); do
    container_ok "$name" || failing+=("$name")
    if [ "$(podman inspect --format '{{.RestartCount}}' "$name" 2>/dev/null || echo 0)" != 0 ]; then
      [[ " ${failing[*]} " == *" $name "* ]] || failing+=("$name")
    fi
  done
  podman ps -a --filter "label=io.podman.compose.project=$PROJECT" \
    --format '{{.Names}}  {{.Status}}' 2>/dev/null || true
  if [ ${#failing[@]} -eq 0 ]; then  # all up: the app's own logs say what went wrong
    mapfile -t failing < <(containers)
    for name in "${failing[@]}"; do
      echo "----- logs: $name (last 15 lines)"
      podman logs --tail 15 "$name" 2>&1 || true
    done
    return
  fi
  for name in "${failing[@]}"; do
    echo "----- logs: $name ($(podman inspect --format '{{.State.Status}}, exit {{.State.ExitCode}}, restarted {{.RestartCount}}x' "$name" 2>/dev/null), last 60 lines)"
    podman logs --tail 60 "$name" 2>&1 || true
  done
}

finish() {
  local rc=$? job
  trap - EXIT INT TERM
  set +e  # clean up as much as possible, whatever fails
  for job in "${JOBS[@]}"; do kill $(pgrep -P "$job") "$job" 2>/dev/null; done
  if [ "$rc" -ne 0 ]; then
    if [ -n "$STACK_UP" ]; then print_failing_logs; fi
    if [ -s "$COMPOSE_LOG" ]; then
      echo "----- podman-compose (last 20 lines)"
      grep -v 'systemd' "$COMPOSE_LOG" | tail -20 || true
    fi
  fi
  if [ -n "$STACK_UP" ]; then
    # -t 5: on failure nothing is left to finish gracefully (the success path stopped it all).
    timeout 120 podman-compose -p "$PROJECT" down -v --remove-orphans -t 5 >>"$COMPOSE_LOG" 2>&1 ||
      say "podman-compose down failed; see podman ps -a"
  fi
  rm -rf "$WORK"
  if [ "$rc" -eq 0 ]; then
    echo "PASS containers: image builds, compose stack up through the proxy, seed and held messages answered, 2 workers registered, Redis outage ridden out, down -v ($((SECONDS - started)) s)"
  else
    echo "FAIL containers: at step '$STEP' (exit $rc, $((SECONDS - started)) s)"
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# GET a URL; prints the status code, and the body into $2 if given; $3: timeout in s (5).
http_status() {
  curl -s -o "${2:-/dev/null}" -w '%{http_code}' --max-time "${3:-5}" "$1" || true
}

# Run "$@" in the background with its output in $WORK/$1.log; its pid is appended to JOBS.
background() {
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  JOBS+=($!)
}

# Wait for the background job $2 (a pid) named $1; on failure print its log.
await() {
  local name=$1 pid=$2
  if ! wait "$pid"; then
    say "$name failed:"; cat "$WORK/$name.log"; return 1
  fi
}

replay() { python3 -m scripts.replay "$@" --base-url "$BASE"; }

step "compose file"
if [ ! -x "$BIN/check-jsonschema" ] || [ ! -x "$BIN/python" ]; then
  make --no-print-directory "${VENV:-.venv}/.dev"
fi
"$BIN/check-jsonschema" --schemafile ../shared/schemas/compose-spec.json docker-compose.yml
"$BIN/python" .ci/check_compose.py docker-compose.yml

step "container sandbox"
../shared/tools/container-sandbox --check >/dev/null 2>&1 || ../shared/tools/container-sandbox
python3 -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', $PORT)); s.close()" 2>/dev/null ||
  { say "port $PORT is in use; set CI_COMPOSE_PORT"; exit 1; }

step "build"
t0=$SECONDS
podman build --network host -v /etc/ssl/certs:/etc/ssl/certs:ro -t "$IMAGE" . >"$WORK/build.log" 2>&1 ||
  { tail -40 "$WORK/build.log"; exit 1; }
say "built $IMAGE in $((SECONDS - t0)) s"
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[ -n "$user" ] && [ "${user%%:*}" != root ] && [ "${user%%:*}" != 0 ] ||
  { say "image runs as root (User=$user)"; exit 1; }
if podman run --rm --entrypoint sh "$IMAGE" -c 'command -v gcc cc make npm node' | grep -q .; then
  say "build tools found in the final image"; exit 1
fi
if [ -f console/package.json ]; then
  podman run --rm --entrypoint test "$IMAGE" -f console/dist/index.html ||
    { say "console/ exists but the image has no console/dist/index.html"; exit 1; }
  say "console built into the image"
fi
# The official image when it is there (a real registry), else the stand-in, rebuilt from its
# cached layers so a change to .ci/nginx/ is picked up.
if ! podman image exists "$NGINX_IMAGE" ||
  podman image inspect --format '{{index .Config.Labels "org.opencontainers.image.description"}}' "$NGINX_IMAGE" | grep -q '^CI stand-in'; then
  t0=$SECONDS
  podman build --network host -v /etc/ssl/certs:/etc/ssl/certs:ro -t "$NGINX_IMAGE" .ci/nginx >"$WORK/build-nginx.log" 2>&1 ||
    { tail -40 "$WORK/build-nginx.log"; exit 1; }
  say "built the nginx stand-in $NGINX_IMAGE in $((SECONDS - t0)) s"
fi

step "compose up, worker scaled to 2"
t0=$SECONDS
STACK_UP=1
compose up -d || { say "podman-compose up failed"; exit 1; }
say "podman-compose up -d in $((SECONDS - t0)) s: $(containers | sed "s/^${PROJECT}_//" | tr '\n' ' ')"
# Scaled on the running stack, while web boots: starting a container makes this podman's DNS
# (aardvark-dns 1.4) stall lookups for seconds, which must not fall inside a timed scenario.
background scale compose up -d --no-deps --scale worker=2 worker
scale_pid=$!

step "liveness through the proxy"
# Seven Python processes import the app at once here: on two busy cores that takes a while.
deadline=$((SECONDS + 120))
until code=$(http_status "$BASE/healthz") && [ "$code" = 200 ]; do
  [ "$SECONDS" -lt "$deadline" ] || { say "no 200 from $BASE/healthz after 120 s (last status $code)"; exit 1; }
  sleep 0.5
done
say "web live on $BASE/healthz after $((SECONDS - t0)) s"

step "health checks, 2 workers registered"
await "scale worker=2" "$scale_pid" || exit 1
mapfile -t workers < <(containers worker)
[ ${#workers[@]} -eq 2 ] || { say "expected 2 worker containers, found: ${workers[*]}"; exit 1; }
wait_all_ok 90
say "every container healthy by its own check ($((SECONDS - t0)) s after up); each of ${workers[*]#"$PROJECT"_} finds its own worker registered"
# /readyz opens connections to PostgreSQL and Redis: their names may take seconds to resolve
# right after containers started (see "graceful stop" below), hence the long timeout.
deadline=$((SECONDS + 60))
until [ "$(http_status "$BASE/readyz" "$WORK/readyz.json" 30)" = 200 ] &&
  python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["checks"]["workers"]["detail"] != "2 worker(s) alive")' "$WORK/readyz.json"; do
  [ "$SECONDS" -lt "$deadline" ] || { say "/readyz is not 200 with 2 workers alive after 60 s:"; cat "$WORK/readyz.json"; echo; exit 1; }
  sleep 0.5
done
say "/readyz 200: $(python3 -c 'import json, sys; print(", ".join(k + ": " + v["detail"] for k, v in json.load(open(sys.argv[1]))["checks"].items()))' "$WORK/readyz.json")"

step "seed and held messages"
# Side by side: each waits for a 5 s quiet window.
seed_check() {
  # The brief's own ids (the database is new): the one reply must list exactly the message.
  replay seed --keep-ids && python3 - "$BASE" <<'PY'
import sys
import time

from scripts.replay.client import Client
from scripts.replay.events import SEED_CONVERSATION_ID, SEED_MESSAGE_ID
from scripts.replay.scenarios import verify_expectation

expect = {"conversation": SEED_CONVERSATION_ID, "status": "OPEN", "replies": [[SEED_MESSAGE_ID]]}
client = Client(sys.argv[1])
checks = verify_expectation(client, expect, reference=time.monotonic())
for check in checks:
    print(f"  {'ok' if check.ok else 'FAILED'}  {check.name}: {check.detail}")
sys.exit(0 if all(check.ok for check in checks) else 1)
PY
}
background seed seed_check; seed_pid=$!
background held replay scenario .ci/scenarios/held-5s.json --expect; held_pid=$!
await "seed scenario" "$seed_pid"
say "seed: one reply listing the message ($(grep -c '  ok ' "$WORK/seed.log") checks)"
await "held scenario" "$held_pid"
say "held: $(tail -1 "$WORK/held.log")"

step "Redis stopped for 5 s"
redis=$(containers redis)
# Groups fall due while Redis is down, and one message arrives inside the outage (a 503, sent
# again after its Retry-After); .ci/scenarios/redis-outage.json has the timing.
background outage replay scenario .ci/scenarios/redis-outage.json --expect --json \
  --retries-503 10 --deadline 60
outage_pid=$!
sleep 1.5  # the scenario's first steps (at 0 and 0.5 s) are answered before Redis goes
t0=$SECONDS
podman stop -t 10 "$redis" >/dev/null
sleep 5  # the outage itself, not a wait for work
podman start "$redis" >/dev/null
say "$redis stopped, started again $((SECONDS - t0)) s later"
if ! wait "$outage_pid"; then
  say "Redis outage scenario failed:"
  python3 - "$WORK/outage.log" <<'PY' || cat "$WORK/outage.log"
import json, sys

report = json.load(open(sys.argv[1]))
for step in report["steps"]:
    print(f"  {step['type']} {step['id']} -> {step['status']} after {step['latency_ms']} ms {step['problem'] or ''}")
for check in report["checks"]:
    print(f"  {'ok' if check['ok'] else 'FAILED'}  {check['name']}: {check['detail']}")
PY
  exit 1
fi
# The message sent inside the outage must have met it (a 503, then the wait for Retry-After),
# or this step checked nothing about the outage.
python3 - "$WORK/outage.log" <<'PY'
import json, sys

report = json.load(open(sys.argv[1]))
inside = report["steps"][-1]
if inside["latency_ms"] < 1000:
    sys.exit(f"containers: the message of {inside['sent_at']} s was answered in {inside['latency_ms']} ms: it missed the outage")
print(
    f"containers: outage: {sum(c['ok'] for c in report['checks'])} checks passed, every group answered"
    f" once; the message sent inside it was taken after {inside['latency_ms'] / 1000:.1f} s (503, sent again)"
)
PY
wait_all_ok 90
say "every container up and healthy again; restarts: $(for n in $(containers); do printf '%s=%s ' "${n#"$PROJECT"_}" "$(podman inspect --format '{{.RestartCount}}' "$n")"; done)"

step "errors before the app, through the proxy"
# JSON of the service's error shape, from nginx (a body over the limit) and from the image's
# gunicorn worker (a request line over its 4094 bytes, passed on by nginx).
is_error() {
  python3 - "$1" "$2" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
sys.exit(0 if doc.get("error") == sys.argv[2] and doc.get("code") and doc.get("message") else 1)
PY
}
body=$WORK/error.json
code=$(python3 -c 'import sys; sys.stdout.write(" " * 1100000)' |
  curl -s -o "$body" -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
    --data-binary @- "$BASE/webhook/" || true)
[ "$code" = 413 ] && is_error "$body" payload_too_large ||
  { say "a 1.1 MB body answered $code, expected a JSON 413:"; cat "$body"; echo; exit 1; }
code=$(http_status "$BASE/$(printf 'a%.0s' $(seq 5000))" "$body")
[ "$code" = 414 ] && is_error "$body" uri_too_long ||
  { say "a 5 KB request line answered $code, expected a JSON 414:"; cat "$body"; echo; exit 1; }
say "413 payload_too_large (nginx) and 414 uri_too_long (gunicorn) in JSON"

step "graceful stop"
# As `docker compose down` stops: dependents first (proxy and app services, side by side), then
# postgres and redis; podman-compose's own `down` stops all at once and removes the containers
# before their exit codes could be read. Each must exit on its stop signal, not be killed.
# The bound is 60 s, not the service's stop_grace_period: a worker's last Redis call after
# SIGTERM opens a new connection, and this podman's DNS (aardvark-dns 1.4) can stall that
# lookup for tens of seconds while other containers leave the network. A stop beyond the grace
# period is reported, not failed.
declare -A grace
while read -r service seconds; do grace[$service]=$seconds; done < <("$BIN/python" - <<'PY'
import re

import yaml

services = yaml.safe_load(open("docker-compose.yml"))["services"]
for name, service in services.items():
    period = str(service.get("stop_grace_period", "10s"))
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", period)
    print(name, int(parts[1] or 0) * 60 + int(parts[2] or 0) if parts else 10)
PY
)
stop_all() {  # stop_all NAME...: side by side; records each one's seconds in $WORK/stop-NAME
  local name pids=()
  for name in "$@"; do
    (
      t=$(date +%s%N)
      podman stop -t 60 "$name" >/dev/null
      echo $((($(date +%s%N) - t) / 1000000)) >"$WORK/stop-$name"
    ) &
    pids+=($!)
  done
  wait "${pids[@]}"
}
t0=$SECONDS
mapfile -t running < <(podman ps --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}')
dependents=() backing=()
for name in "${running[@]}"; do
  case $(service_of "$name") in postgres | redis) backing+=("$name") ;; *) dependents+=("$name") ;; esac
done
stop_all "${dependents[@]}"
stop_all "${backing[@]}"
stopped=() slow=()
for name in "${running[@]}"; do
  rc=$(podman inspect --format '{{.State.ExitCode}}' "$name")
  [ "$rc" != 137 ] || { say "$name ignored its stop signal and was killed after 60 s"; exit 1; }
  ms=$(cat "$WORK/stop-$name")
  short=${name#"$PROJECT"_}
  stopped+=("$short=$rc")
  limit=${grace[$(service_of "$name")]:-10}
  [ "$ms" -le $((limit * 1000)) ] || slow+=("$short: $((ms / 1000)) s, grace period $limit s")
done
say "stopped in $((SECONDS - t0)) s, exit codes: ${stopped[*]}"
[ ${#slow[@]} -eq 0 ] || say "note: stopped after their grace period (killed under Docker): ${slow[*]}"

step "down -v"
t0=$SECONDS
compose down -v --remove-orphans || { say "podman-compose down failed"; exit 1; }
STACK_UP=
left=$(
  containers
  podman volume ls --format '{{.Name}}' | grep "^${PROJECT}_" || true
  podman network ls --format '{{.Name}}' | grep "^${PROJECT}_" || true
  podman pod ls --format '{{.Name}}' | grep "_${PROJECT}\$" || true
)
[ -z "$left" ] || { say "left behind by down -v: $left"; exit 1; }
say "down -v --remove-orphans in $((SECONDS - t0)) s: no container, volume, network or pod left"
