#!/usr/bin/env bash
# Run web, worker and scheduler together until Ctrl-C or SIGTERM, which stops all of them.
# Used by `make run`; configuration comes from the environment and an optional .env file.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
if [ -f .env ]; then set -a; . ./.env; set +a; fi
export PORT=${PORT:-8000}
export FLASK_APP=wsgi
REDIS_URL_DEFAULT=redis://localhost:6379/0
pids=()

stop() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop INT TERM EXIT

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
if ! redis_answers "$url"; then
  if [ "$url" = "$REDIS_URL_DEFAULT" ] && command -v redis-server >/dev/null 2>&1; then
    echo "run: no Redis at $url; starting a private redis-server for this run"
    mkdir -p instance
    redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no --dir instance \
      --logfile instance/redis.log &
    pids+=($!)
    for _ in $(seq 50); do redis_answers "$url" && break; sleep 0.1; done
  else
    echo "run: Redis does not answer at $url." >&2
    echo "     Start one (e.g. 'redis-server' or 'docker run -p 6379:6379 redis:7') or set REDIS_URL." >&2
    exit 1
  fi
fi

"$BIN/flask" db upgrade
"$BIN/gunicorn" -c gunicorn.conf.py wsgi:app & pids+=($!)
"$BIN/flask" worker & pids+=($!)
"$BIN/flask" scheduler & pids+=($!)
echo "run: web on http://localhost:$PORT (API docs at /docs, console at /ui/); Ctrl-C stops everything"
wait -n "${pids[@]}"
echo "run: a process exited; stopping the others" >&2
exit 1
