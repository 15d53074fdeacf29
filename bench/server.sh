# Sourced by the benchmarks: start_server BIN BACKEND [ADMIN_URL] starts BIN (`run`) on a fresh
# SQLite data directory or a fresh PostgreSQL database, with the CFA_* variables the caller
# exported, removes both on exit, and waits until it is ready (exit 2 with its log if it never is).
# Sets $work (its data directory, server.log inside), $pid and $base. Needs $port.
start_server() {
  local bin=$1
  backend=$2
  work=$(mktemp -d)
  export CFA_LISTEN=127.0.0.1:$port CFA_DATA_DIR=$work
  case $backend in
    sqlite) ;;
    postgres)
      admin=${3:-postgres://postgres@127.0.0.1:5432/postgres}
      db=cfa_bench_$$
      psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
      export CFA_DATABASE_URL=${admin%/*}/$db ;;
    *) echo "backend: sqlite or postgres" >&2; rm -rf "$work"; exit 2 ;;
  esac
  "$bin" run >"$work/server.log" 2>&1 &
  pid=$!
  trap stop_server EXIT
  base=http://127.0.0.1:$port
  for _ in $(seq 1 300); do curl -sf "$base/ready" >/dev/null && break; sleep 0.1; done
  curl -sf "$base/ready" >/dev/null || { echo "the server did not become ready:" >&2; tail -n 20 "$work/server.log" >&2; exit 2; }
}

stop_server() {
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  if [ "$backend" = postgres ]; then psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; fi
  rm -rf "$work"
}
