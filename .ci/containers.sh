#!/usr/bin/env bash
# Container check, run from the repository root (CI: a clone at <tmp>/main, <tmp>/shared beside):
#   1. docker-compose.yml against the Compose schema, and .ci/check_compose.py;
#   2. `podman build` of the Dockerfile (the container sandbox stands in for Docker here);
#   3. migrate, then web + worker + scheduler containers against this machine's PostgreSQL (a
#      dedicated database, recreated) and Redis (a dedicated index, flushed), and in front of
#      web the compose `proxy`: the host's nginx (the sandbox has no nginx image) rendered from
#      the same deploy/nginx template (tests/proxy.py);
#   4. the seed scenario over HTTP through the proxy, until the grouped OUTBOUND reply appears;
#   5. the containers' own health checks, JSON errors from the proxy (413) and from the image's
#      gunicorn (414) through it, and a graceful stop.
# Prints PASS or FAIL last. Settings (defaults in brackets):
#   CI_PG_ADMIN_URL [postgresql://postgres@127.0.0.1:5432/postgres]   CI_PG_DB [containers_ci]
#   CI_REDIS_URL [redis://127.0.0.1:6379/13]   CI_WEB_PORT [18080]   CI_PROXY_PORT [18081]
#   NGINX [nginx on PATH, else /usr/sbin/nginx]   VENV [.venv]
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=localhost/conversations:ci
PG_ADMIN_URL=${CI_PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
PG_DB=${CI_PG_DB:-containers_ci}
DATABASE_URL=${PG_ADMIN_URL%/*}/$PG_DB
REDIS_URL=${CI_REDIS_URL:-redis://127.0.0.1:6379/13}
PORT=${CI_WEB_PORT:-18080}
PROXY_PORT=${CI_PROXY_PORT:-18081}
# Every request of the check goes through the proxy, as in compose.
BASE=http://127.0.0.1:$PROXY_PORT
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
NGINX_DIR=
NGINX_PID=
BIN=${VENV:-.venv}/bin
NAME=conversations-ci-$$
CONTAINERS=()
STEP="setup"
started=$SECONDS

say() { printf 'containers: %s\n' "$*"; }
step() { STEP=$1; say "== $1"; }

finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ] && [ ${#CONTAINERS[@]} -gt 0 ]; then
    for c in "${CONTAINERS[@]}"; do
      echo "----- logs: $c (last 40 lines)"
      podman logs --tail 40 "$c" 2>&1 || true
    done
  fi
  if [ -n "$NGINX_DIR" ]; then
    if [ "$rc" -ne 0 ]; then
      echo "----- nginx error log (last 20 lines)"
      tail -20 "$NGINX_DIR/error.log" 2>/dev/null || true
    fi
    if [ -n "$NGINX_PID" ]; then
      kill "$NGINX_PID" 2>/dev/null || true
      wait "$NGINX_PID" 2>/dev/null || true
    fi
    rm -rf "$NGINX_DIR"
  fi
  if [ ${#CONTAINERS[@]} -gt 0 ]; then
    podman rm -f -t 5 "${CONTAINERS[@]}" >/dev/null 2>&1 || true
  fi
  if [ "$rc" -eq 0 ]; then
    echo "PASS containers: image builds, compose valid, seed scenario answered through the proxy ($((SECONDS - started)) s)"
  else
    echo "FAIL containers: at step '$STEP' (exit $rc, $((SECONDS - started)) s)"
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# GET a URL; prints the status code, and the body into $2 if given.
http_status() {
  curl -s -o "${2:-/dev/null}" -w '%{http_code}' --max-time 5 "$1" || true
}

step "compose file"
if [ ! -x "$BIN/check-jsonschema" ] || [ ! -x "$BIN/python" ]; then
  make --no-print-directory "${VENV:-.venv}/.dev"
fi
"$BIN/check-jsonschema" --schemafile ../shared/schemas/compose-spec.json docker-compose.yml
"$BIN/python" .ci/check_compose.py docker-compose.yml

step "container sandbox"
../shared/tools/container-sandbox --check >/dev/null 2>&1 || ../shared/tools/container-sandbox

step "build"
t0=$SECONDS
podman build --network host -v /etc/ssl/certs:/etc/ssl/certs:ro -t "$IMAGE" . >"${TMPDIR:-/tmp}/$NAME-build.log" 2>&1 ||
  { tail -40 "${TMPDIR:-/tmp}/$NAME-build.log"; exit 1; }
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

step "database and redis"
psql -q "$PG_ADMIN_URL" -v ON_ERROR_STOP=1 \
  -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB" >/dev/null
"$BIN/python" -c "import redis, sys; redis.Redis.from_url(sys.argv[1]).flushdb()" "$REDIS_URL"
for p in "$PORT:CI_WEB_PORT" "$PROXY_PORT:CI_PROXY_PORT"; do
  python3 -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', ${p%%:*})); s.close()" 2>/dev/null ||
    { say "port ${p%%:*} is in use; set ${p#*:}"; exit 1; }
done
[ -x "$NGINX" ] || { say "nginx is needed in front of web (apt-get install nginx); set NGINX"; exit 1; }

run_env=(--network host -e "DATABASE_URL=$DATABASE_URL" -e "REDIS_URL=$REDIS_URL" -e "PORT=$PORT"
  -e LOG_LEVEL=INFO -e WAIT_TIMEOUT=30)

step "migrate"
CONTAINERS+=("$NAME-migrate")
podman run --name "$NAME-migrate" "${run_env[@]}" "$IMAGE" flask db upgrade
[ "$(podman inspect --format '{{.State.ExitCode}}' "$NAME-migrate")" = 0 ]

step "start web, worker, scheduler"
podman run -d --name "$NAME-web" "${run_env[@]}" "$IMAGE" >/dev/null
CONTAINERS+=("$NAME-web")
podman run -d --name "$NAME-worker" "${run_env[@]}" "$IMAGE" flask worker >/dev/null
CONTAINERS+=("$NAME-worker")
podman run -d --name "$NAME-scheduler" "${run_env[@]}" "$IMAGE" flask scheduler >/dev/null
CONTAINERS+=("$NAME-scheduler")

step "proxy"
# The compose proxy's settings (docker-compose.yml), on the host network: nginx listens on
# PROXY_PORT and passes to the web container's PORT.
NGINX_DIR=$(mktemp -d "${TMPDIR:-/tmp}/$NAME-nginx.XXXXXX")
conf=$("$BIN/python" -m tests.proxy "$NGINX_DIR" "PROXY_LISTEN=127.0.0.1:$PROXY_PORT" \
  "PROXY_UPSTREAM=127.0.0.1:$PORT" PROXY_CLIENT_TIMEOUT=5s MAX_BODY_BYTES=1048576)
"$NGINX" -q -t -p "$NGINX_DIR" -e "$NGINX_DIR/error.log" -c "$conf"
"$NGINX" -p "$NGINX_DIR" -e "$NGINX_DIR/error.log" -c "$conf" -g 'daemon off;' \
  >"$NGINX_DIR/stdout.log" 2>&1 &
NGINX_PID=$!
say "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') on $BASE, in front of 127.0.0.1:$PORT"

step "liveness"
live=/healthz
deadline=$((SECONDS + 30))
until code=$(http_status "$BASE/healthz") && [ "$code" = 200 ]; do
  if [ "$code" = 404 ] && [ "$(http_status "$BASE/openapi.json")" = 200 ]; then
    live=/openapi.json; break
  fi
  [ "$SECONDS" -lt "$deadline" ] || { say "web not live through the proxy after 30 s (last status $code)"; exit 1; }
  sleep 0.3
done
say "web live on $BASE$live"

step "container health checks"
deadline=$((SECONDS + 20))
for role in web worker scheduler; do
  until podman exec "$NAME-$role" python /app/docker/healthcheck.py "$role" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { podman exec "$NAME-$role" python /app/docker/healthcheck.py "$role" || true; exit 1; }
    sleep 0.3
  done
  say "$role healthy"
done
code=$(http_status "$BASE/readyz")
case $code in
  200) say "/readyz 200" ;;
  404) say "/readyz not there yet (404), skipped" ;;
  *) say "/readyz answered $code with PostgreSQL, Redis and a worker up"; exit 1 ;;
esac

step "seed scenario"
conversation=6a41b347-8d80-4ce9-84ba-7af66f369f6a
message=49108c71-4dca-4af3-9f32-61bc745926e2
post() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'Content-Type: application/json' \
    --data "$1" "$BASE/webhook/"
}
code=$(post '{"type": "NEW_CONVERSATION", "timestamp": "2025-06-04T14:20:00Z",
  "data": {"id": "'$conversation'"}}')
[ "$code" = 201 ] || { say "NEW_CONVERSATION answered $code, expected 201"; exit 1; }
code=$(post '{"type": "NEW_MESSAGE", "timestamp": "2025-06-04T14:20:05Z",
  "data": {"id": "'$message'", "content": "Olá", "conversation_id": "'$conversation'"}}')
[ "$code" = 202 ] || { say "NEW_MESSAGE answered $code, expected 202"; exit 1; }
sent=$SECONDS
sent_ms=$(($(date +%s%N) / 1000000))
body=${TMPDIR:-/tmp}/$NAME-conversation.json
until [ "$(http_status "$BASE/conversations/$conversation/" "$body")" = 200 ] &&
  python3 - "$body" "$message" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
want = f"Mensagens recebidas:\n{sys.argv[2]}\n"
sys.exit(0 if any(m["type"] == "OUTBOUND" and m["content"] == want for m in doc["messages"]) else 1)
PY
do
  [ $((SECONDS - sent)) -lt 20 ] || { say "no OUTBOUND reply within 20 s:"; cat "$body"; echo; exit 1; }
  sleep 0.25
done
elapsed_ms=$(($(date +%s%N) / 1000000 - sent_ms))
say "OUTBOUND reply seen $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000))) s after the message (quiet window 5 s, poll 0.25 s): $(python3 -c 'import json,sys; print(json.dumps([m["type"] for m in json.load(open(sys.argv[1]))["messages"]]))' "$body")"
rm -f "$body"

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
body=${TMPDIR:-/tmp}/$NAME-error.json
code=$(python3 -c 'import sys; sys.stdout.write(" " * 1100000)' |
  curl -s -o "$body" -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
    --data-binary @- "$BASE/webhook/" || true)
[ "$code" = 413 ] && is_error "$body" payload_too_large ||
  { say "a 1.1 MB body answered $code, expected a JSON 413:"; cat "$body"; echo; exit 1; }
code=$(http_status "$BASE/$(printf 'a%.0s' $(seq 5000))" "$body")
[ "$code" = 414 ] && is_error "$body" uri_too_long ||
  { say "a 5 KB request line answered $code, expected a JSON 414:"; cat "$body"; echo; exit 1; }
rm -f "$body"
say "413 payload_too_large (nginx) and 414 uri_too_long (gunicorn) in JSON"

step "graceful stop"
for role in web worker scheduler; do
  t0=$SECONDS
  podman stop -t 25 "$NAME-$role" >/dev/null
  rc=$(podman inspect --format '{{.State.ExitCode}}' "$NAME-$role")
  say "$role stopped on SIGTERM in $((SECONDS - t0)) s, exit $rc"
  [ "$rc" != 137 ] || { say "$role ignored SIGTERM and was killed"; exit 1; }
done
rm -f "${TMPDIR:-/tmp}/$NAME-build.log"
