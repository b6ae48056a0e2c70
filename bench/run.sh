#!/usr/bin/env bash
# make bench: runs the benchmarks and prints their tables. Each benchmark also
# writes its table to bench/out/<name>.txt (bench/out is not committed).
#
#   bench/run.sh               every benchmark
#   bench/run.sh failover      only the named ones
#
# Benchmarks build test beds in network namespaces: root only.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

if [ "$(id -u)" -ne 0 ]; then
	echo "bench: must run as root (the benchmarks build network namespaces); try: sudo make bench" >&2
	exit 1
fi
out=bench/out
mkdir -p "$out"

# One function per benchmark, named bench_<name>: it prints its table on
# stdout (progress on stderr) and writes it to $out/<name>.txt. Add new ones
# here and to the list below.

# VIP failover time seen by a client, per HA system, fault and timer setting.
# FAILOVER_KILLS sets the crashes per row (default 10).
bench_failover() {
	command -v keepalived >/dev/null || {
		echo "bench failover: keepalived not installed (apt-get install keepalived)" >&2
		return 1
	}
	go build -o "$out/failoverbench" ./bench/failover/cmd/failoverbench
	"$out/failoverbench" -kills "${FAILOVER_KILLS:-10}" | tee "$out/failover.txt"
}

# Filesystem workloads on plain disk, the capture mount and replicated in
# sync mode, plus full resyncs of 10 GiB / 1,000,000 files (bench/replication).
# Needs ~25 GB free in FSBENCH_DIR; FSBENCH_FLAGS passes flags (quick run:
# FSBENCH_FLAGS="-scale 0.05 -runs 1 -resync-files 20000 -resync-bytes 200000000").
bench_fs() {
	go build -o "$out/fsbench" ./bench/replication/cmd/fsbench
	# shellcheck disable=SC2086 # FSBENCH_FLAGS is a list of flags
	"$out/fsbench" -dir "${FSBENCH_DIR:-/var/tmp/halo-fsbench}" ${FSBENCH_FLAGS:-} | tee "$out/fs.txt"
}

# pgbench TPS on a plain directory, the capture mount without a peer and
# replicated in sync mode to a peer in another namespace (test/postgresql,
# PostgreSQL 15 needed).
bench_pgbench() {
	HALO_BENCH=1 HALO_BIN="$PWD/bin" go test -count=1 -v -timeout 30m -run TestPgbenchReplicatedVsPlain ./test/postgresql |
		tee "$out/pgbench.log" | grep -v -E '^(=== |--- |PASS|ok )' | tee "$out/pgbench.txt"
}

benchmarks=(failover fs pgbench)

selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${benchmarks[@]}")
for name in "${selected[@]}"; do
	if ! declare -F "bench_$name" >/dev/null; then
		echo "bench: unknown benchmark $name (have: ${benchmarks[*]})" >&2
		exit 1
	fi
	echo "== bench $name" >&2
	"bench_$name"
done
