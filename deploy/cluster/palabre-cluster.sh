#!/usr/bin/env bash
# Several Palabre front-ends on one machine sharing one PostgreSQL store (and, optionally, the
# model actors of a Ray cluster): the commands of docs/deploy.md "Several front-ends", runnable.
#
#   PALABRE_STORE=postgresql://palabre:SECRET@db:5432/palabre deploy/cluster/palabre-cluster.sh start
#   deploy/cluster/palabre-cluster.sh status
#   deploy/cluster/palabre-cluster.sh stop
#
# Settings (environment):
#   PALABRE_STORE   the PostgreSQL URI every front-end shares (required for start)
#   FRONT_ENDS      how many front-ends (default 2), on ports BASE_PORT, BASE_PORT+1, …
#   BASE_PORT       default 8765
#   HOST            the address they listen on (default 127.0.0.1; a load balancer in front:
#                   deploy/cluster/nginx.conf)
#   RUN_DIR         data dirs, logs and pid files (default ./palabre-cluster); each front-end has
#                   its own data dir (its index files): nothing is shared on disk
#   RAY_ADDRESS     a Ray cluster's address (HEAD:6379) to run the model actors in (`--ray`); unset:
#                   each front-end loads its own models
#   PALABRE         how to run palabre (default: palabre)
#   PALABRE_ARGS    more arguments for every `palabre serve` (e.g. "--auth --model base")
#   READY_TIMEOUT_S how long start waits for each front-end's /healthz (default 300)
set -euo pipefail

FRONT_ENDS=${FRONT_ENDS:-2}
BASE_PORT=${BASE_PORT:-8765}
HOST=${HOST:-127.0.0.1}
RUN_DIR=${RUN_DIR:-./palabre-cluster}
PALABRE=${PALABRE:-palabre}
PALABRE_ARGS=${PALABRE_ARGS:-}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-300}

healthy() { # port
    python3 -c "import sys, urllib.request; urllib.request.urlopen(f'http://${HOST}:{sys.argv[1]}/healthz', timeout=2)" \
        "$1" 2>/dev/null
}

start() {
    : "${PALABRE_STORE:?set PALABRE_STORE to the postgresql:// URI the front-ends share}"
    export PALABRE_STORE  # read by `palabre serve` (never on its command line: ps shows those)
    mkdir -p "$RUN_DIR"
    local ray=() i port
    if [[ -n "${RAY_ADDRESS:-}" ]]; then ray=(--ray "$RAY_ADDRESS"); fi
    for ((i = 0; i < FRONT_ENDS; i++)); do
        port=$((BASE_PORT + i))
        mkdir -p "$RUN_DIR/front-end-$i"
        # shellcheck disable=SC2086  # PALABRE and PALABRE_ARGS are word lists
        nohup $PALABRE serve --host "$HOST" --port "$port" --data-dir "$RUN_DIR/front-end-$i" \
            "${ray[@]}" $PALABRE_ARGS >"$RUN_DIR/front-end-$i.log" 2>&1 &
        echo $! >"$RUN_DIR/front-end-$i.pid"
    done
    for ((i = 0; i < FRONT_ENDS; i++)); do
        port=$((BASE_PORT + i))
        local waited=0
        until healthy "$port"; do
            if ! kill -0 "$(cat "$RUN_DIR/front-end-$i.pid")" 2>/dev/null; then
                echo "front-end $i exited; its log: $RUN_DIR/front-end-$i.log" >&2
                tail -n 20 "$RUN_DIR/front-end-$i.log" >&2
                exit 1
            fi
            if ((waited >= READY_TIMEOUT_S)); then
                echo "front-end $i not healthy after ${READY_TIMEOUT_S} s" >&2
                exit 1
            fi
            sleep 1
            waited=$((waited + 1))
        done
        echo "front-end $i: ws://$HOST:$port (pid $(cat "$RUN_DIR/front-end-$i.pid"))"
    done
}

stop() {
    local pidfile pid
    for pidfile in "$RUN_DIR"/front-end-*.pid; do
        [[ -e "$pidfile" ]] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"  # a graceful stop: sessions are told, finals stored, indexes saved
            for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        fi
        rm -f "$pidfile"
    done
}

status() {
    local i port
    for ((i = 0; i < FRONT_ENDS; i++)); do
        port=$((BASE_PORT + i))
        if healthy "$port"; then echo "front-end $i ($port): up"; else echo "front-end $i ($port): down"; fi
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
