#!/usr/bin/env bash
# genproto.sh regenerates the Go code of the halo plugin protocol from
# sdk/proto/halo/plugin/v1/*.proto (`make proto`).
#
# Usage: genproto.sh [OUT_DIR]
#   OUT_DIR receives proto/halo/plugin/v1/*.go; it defaults to the sdk
#   directory, i.e. the committed copy is rewritten in place. The up-to-date
#   test passes a temporary directory and compares.
#
# The generators' versions are written into the generated headers, so the
# script insists on the pinned ones: the same inputs and tools always give
# byte-identical output, and CI can regenerate and `git diff --exit-code`.
set -euo pipefail

want_protoc="3.21."            # any 3.21 patch release: "// protoc v3.21.N" in headers
want_gen_go="v1.36.12"
want_gen_grpc="1.5.1"

sdk_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${1:-$sdk_dir}"
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"

# The generators installed by `go install` live in GOBIN or GOPATH/bin.
gobin="$(go env GOBIN 2>/dev/null || true)"
[ -n "$gobin" ] || gobin="$(go env GOPATH 2>/dev/null)/bin"
export PATH="$gobin:$PATH"

die() { echo "genproto: $*" >&2; exit 1; }

command -v protoc >/dev/null || die "protoc not found (apt-get install protobuf-compiler)"
command -v protoc-gen-go >/dev/null || die "protoc-gen-go not found (go install google.golang.org/protobuf/cmd/protoc-gen-go@$want_gen_go)"
command -v protoc-gen-go-grpc >/dev/null || die "protoc-gen-go-grpc not found (go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v$want_gen_grpc)"

have_protoc="$(protoc --version | awk '{print $2}')"
have_gen_go="$(protoc-gen-go --version | awk '{print $2}')"
have_gen_grpc="$(protoc-gen-go-grpc --version | awk '{print $2}')"
case "$have_protoc" in "$want_protoc"*) ;; *) die "protoc $have_protoc, want ${want_protoc}x" ;; esac
[ "$have_gen_go" = "$want_gen_go" ] || die "protoc-gen-go $have_gen_go, want $want_gen_go"
[ "$have_gen_grpc" = "$want_gen_grpc" ] || die "protoc-gen-go-grpc $have_gen_grpc, want $want_gen_grpc"

pkg_dir="proto/halo/plugin/v1"
mkdir -p "$out_dir/$pkg_dir"
# Remove stale outputs first so a deleted .proto does not leave its code behind.
rm -f "$out_dir/$pkg_dir"/*.pb.go

cd "$sdk_dir/proto"
# Sorted, relative paths: the order and the "source:" header lines are stable.
mapfile -t protos < <(LC_ALL=C ls halo/plugin/v1/*.proto | LC_ALL=C sort)
protoc \
	-I . \
	--go_out="$out_dir" --go_opt=module=github.com/halo-ha/halo/sdk \
	--go-grpc_out="$out_dir" --go-grpc_opt=module=github.com/halo-ha/halo/sdk \
	"${protos[@]}"
