#!/usr/bin/env bash
# halo demonstration (make demo). Narrates each step in plain words.
#
#   1. the shipped example modules, validated against the built plugins;
#   2. a REAL two-node mirror: node1, node2 and a client as network
#      namespaces on this machine, a halo mirror module protecting a web
#      service behind a virtual IP; the primary is crashed (kill -9 of
#      everything on it) and the client's downtime is measured; the node
#      comes back as SECOND; the roles are swapped back;
#   3. a REAL light module: `halo agent` protecting a service on this
#      machine, restarting it when it is killed, stopping it after max_loop.
#
# DEMO=postgresql runs the PostgreSQL variant instead (test/postgresql).
#
# Everything it creates is removed at the end, on Ctrl-C and on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "make demo needs root: it creates network namespaces, virtual links and a virtual IP." >&2
	echo "Run it again as root, e.g.: sudo make demo" >&2
	exit 1
fi
command -v go >/dev/null || export PATH=/usr/local/go/bin:$PATH
BIN=${BIN:-$PWD/bin}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

[ -x "$BIN/halo" ] || make build BIN="$BIN"

# make demo DEMO=postgresql: PostgreSQL under load, its primary crashed,
# every acknowledged commit checked (test/postgresql, narrated).
if [ "${DEMO:-}" = postgresql ]; then
	exec env HALO_DEMO=1 HALO_BIN="$BIN" go test -count=1 -v -timeout 10m -run '^TestPostgreSQLDemo$' ./test/postgresql
fi

work=$(mktemp -d /tmp/halo-demo.XXXXXX)
agent_pid=""
cleanup() {
	status=$?
	trap - EXIT INT TERM
	[ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
	[ -f "$work/svc.pid" ] && kill "$(cat "$work/svc.pid")" 2>/dev/null || true
	# The mirror demo tears its namespaces down itself, also on Ctrl-C; if
	# it was killed outright, this removes what it left.
	[ -x "$work/mirrordemo" ] && "$work/mirrordemo" -cleanup || true
	rm -rf "$work"
	[ "$status" -eq 0 ] || echo "demo: stopped (exit $status); everything it set up has been removed." >&2
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "1. The shipped modules, checked against the plugins' own schemas"
"$BIN/halo" validate --plugin-dir "$BIN/plugins" modules/

say "2. A mirror module on two servers, with a real failover"
go build -o "$work/mirrordemo" ./test/mirror/cmd/demo
"$work/mirrordemo" -bin "$BIN"

say "3. A light module protecting a real service on this machine"
svc="$work/demosvc"
cp /bin/sleep "$svc"
mkdir -p "$work/etc/modules/demo/scripts" "$work/data"
cat >"$work/etc/cluster.hcl" <<HCL
cluster "demo" {
  network "default" {}
  node "demo1" { addresses = { default = "198.18.0.1" } }
}
HCL
cat >"$work/etc/modules/demo/module.hcl" <<HCL
module "demo" {
  kind          = "light"
  id            = 1
  nodes         = ["demo1"]
  max_loop      = 2
  loop_interval = "1h"
  app {
    env = { SVC = "$svc", PIDFILE = "$work/svc.pid" }
  }
  health { enabled = false } # this node's address is not on this machine
  check "errd" "service" {
    interval = "500ms"
    timeout  = "400ms"
    action   = "restart"
    name     = "demosvc"
  }
}
HCL
cat >"$work/etc/modules/demo/scripts/start_both" <<'SH'
#!/bin/sh
setsid "$SVC" 100000 </dev/null >/dev/null 2>&1 &
echo $! > "$PIDFILE"
echo "service started, pid $!"
SH
cat >"$work/etc/modules/demo/scripts/stop_both" <<'SH'
#!/bin/sh
[ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null
rm -f "$PIDFILE"
echo "service stopped ($*)"
SH
chmod +x "$work/etc/modules/demo/scripts/"*
export HALO_CONFIG_DIR=$work/etc HALO_DATA_DIR=$work/data HALO_PLUGIN_DIR=$BIN/plugins HALO_NODE=demo1
"$BIN/halo" agent --log-level error &
agent_pid=$!
for _ in $(seq 100); do "$BIN/halo" status >/dev/null 2>&1 && break; sleep 0.1; done

echo "The agent runs one module, 'demo': a service watched by the errd process checker."
"$BIN/halo" start demo
sleep 1
"$BIN/halo" status -v
pid=$(cat "$work/svc.pid")
echo; echo "Killing the service (pid $pid) with SIGKILL, as a crash would..."
kill -9 "$pid"
t0=$(date +%s.%N)
for _ in $(seq 200); do
	new=$(cat "$work/svc.pid" 2>/dev/null || true)
	[ -n "$new" ] && [ "$new" != "$pid" ] && break
	sleep 0.05
done
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v p="$(cat "$work/svc.pid")" 'BEGIN { printf "errd noticed and halo restarted it as pid %s after %.2f s.\n", p, b - a }'
sleep 1
echo; echo "Two more crashes exceed max_loop = 2 within loop_interval: halo stops the module and says why."
for _ in 1 2; do
	pid=$(cat "$work/svc.pid"); kill -9 "$pid"
	for _ in $(seq 100); do [ "$(cat "$work/svc.pid" 2>/dev/null)" != "$pid" ] && break; sleep 0.05; done
	sleep 1
done
"$BIN/halo" status demo
echo; echo "The module's event log (halo logs demo):"
"$BIN/halo" logs demo
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=""

say "Done"
echo "Everything the demo set up is being removed."
