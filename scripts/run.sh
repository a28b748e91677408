#!/usr/bin/env bash
# Run web, worker and scheduler (plus a delivery worker when REPLY_WEBHOOK_URL is set, and a
# generation worker when REPLY_GENERATOR_URL is set) together
# until Ctrl-C or SIGTERM, which stops all of them. With DEMO_RECEIVER=1 the reference receiver
# (scripts/receiver.py) runs with them and the replies are delivered to it.
# Used by `make run`; configuration comes from the environment and an optional .env file.
# Exit status: 0 after a requested stop (Ctrl-C, SIGTERM); 1 when a process exits by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
# .env fills in what the environment leaves unset, as the app's own loading does (python-dotenv,
# override=False): re-applying the exported variables afterwards keeps theirs.
if [ -f .env ]; then
  exported=$(export -p)
  set -a; . ./.env; set +a
  eval "$exported"
fi
export PORT=${PORT:-8000}
# Local by default: without API_TOKEN the read endpoints are open (INSTRUCTIONS.md, "Expose it").
export HOST=${HOST:-127.0.0.1}
export FLASK_APP=wsgi
REDIS_URL_DEFAULT=redis://localhost:6379/0
pids=()
declare -A names=()

stop_children() {
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [ -n "${PID_FILE:-}" ]; then rm -f "$PID_FILE"; fi
}

stopped_on_request() {
  # A second Ctrl-C must not cut the wait short: the processes are already stopping.
  trap '' INT TERM
  trap - EXIT
  stop_children
  echo "run: stopped"
  exit 0
}
trap stopped_on_request INT TERM
trap stop_children EXIT

start() {
  local name=$1
  shift
  "$@" &
  pids+=($!)
  names[$!]=$name
}

port_answers() {
  "$BIN/python" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" 2>/dev/null
}

redis_answers() {
  "$BIN/python" - "$1" <<'PY'
import sys, redis
try:
    redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()
except Exception:
    sys.exit(1)
PY
}

url=${REDIS_URL:-$REDIS_URL_DEFAULT}
# With Sentinel the sentinels name the server, and the processes wait for a master themselves.
if [ -z "${REDIS_SENTINELS:-}" ] && ! redis_answers "$url"; then
  if [ "$url" = "$REDIS_URL_DEFAULT" ] && command -v redis-server >/dev/null 2>&1; then
    echo "run: no Redis at $url; starting a private redis-server for this run"
    mkdir -p instance
    start redis-server redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no \
      --dir instance --logfile instance/redis.log
    for _ in $(seq 50); do redis_answers "$url" && break; sleep 0.1; done
  else
    echo "run: Redis does not answer at $url." >&2
    echo "     Start one (e.g. 'redis-server' or 'docker run -p 6379:6379 redis:7') or set REDIS_URL." >&2
    exit 1
  fi
fi

# `make reset` refuses to delete the database under a running service.
PID_FILE=${RUN_PID_FILE:-instance/run.pid}
mkdir -p "$(dirname "$PID_FILE")"
echo $$ >"$PID_FILE"
# DEMO_RECEIVER=1: watch deliveries end to end on one machine. The reference receiver takes the
# replies (REPLY_WEBHOOK_URL and a fresh REPLY_WEBHOOK_SECRET point at it, whatever was set),
# and its control API lets this run's console show what it got and make it fail.
if [ "${DEMO_RECEIVER:-}" = 1 ]; then
  receiver_port=${DEMO_RECEIVER_PORT:-9000}
  control_port=${DEMO_RECEIVER_CONTROL_PORT:-9001}
  if [ -n "${REPLY_WEBHOOK_URL:-}" ]; then
    echo "run: DEMO_RECEIVER=1: replies go to the reference receiver, not to $REPLY_WEBHOOK_URL"
  fi
  export REPLY_WEBHOOK_URL=http://127.0.0.1:$receiver_port/
  REPLY_WEBHOOK_SECRET=$("$BIN/python" -c 'from scripts.receiver import new_secret; print(new_secret())')
  export REPLY_WEBHOOK_SECRET
  # A retry soon after the receiver comes back, rather than up to 30 s later.
  export DELIVERY_MAX_BACKOFF_SECONDS=${DELIVERY_MAX_BACKOFF_SECONDS:-5}
  # The secret goes by the environment ($REPLY_WEBHOOK_SECRET), not the command line.
  start receiver "$BIN/python" -m scripts.receiver --port "$receiver_port" \
    --control-port "$control_port" \
    --allow-origin "http://127.0.0.1:$PORT" --allow-origin "http://localhost:$PORT"
  receiver_pid=$!
  until port_answers "$control_port"; do
    if ! kill -0 "$receiver_pid" 2>/dev/null; then
      echo "run: the reference receiver did not start (DEMO_RECEIVER_PORT, DEMO_RECEIVER_CONTROL_PORT)" >&2
      exit 1
    fi
    sleep 0.1
  done
fi
"$BIN/flask" db upgrade
start web "$BIN/gunicorn" -c gunicorn.conf.py wsgi:app
start worker "$BIN/flask" worker
# Deliveries (on only with REPLY_WEBHOOK_URL) have a worker of their own: a slow receiver must
# never hold up a flush.
if [ -n "${REPLY_WEBHOOK_URL:-}" ]; then
  start delivery-worker "$BIN/flask" worker --queue deliveries
fi
# So do the calls to the team's bot (on only with REPLY_GENERATOR_URL).
if [ -n "${REPLY_GENERATOR_URL:-}" ]; then
  start generation-worker "$BIN/flask" worker --queue generations
fi
start scheduler "$BIN/flask" scheduler
echo "run: web on http://$HOST:$PORT (API docs at /docs, console at /ui/); Ctrl-C stops everything"
if [ "${DEMO_RECEIVER:-}" = 1 ]; then
  echo "run: replies are delivered to the reference receiver at $REPLY_WEBHOOK_URL (control API on" \
    "http://127.0.0.1:$control_port/: the console's simulator, section Receiver)"
fi
status=0
wait -n -p exited "${pids[@]}" || status=$?
echo "run: the ${names[$exited]} process exited by itself (status $status); stopping the others" >&2
exit 1
