#!/usr/bin/env bash
# Build the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)
# from the Go module proxy, pinned, into a cache reused by every later run.
#   deploy/cluster/build.sh [CACHE_DIR]      (default: $KUBESIGHT_CLUSTER_CACHE or ~/.cache/kubesight/cluster)
# Recipe (measured on 2 cores: ~8 min the first time, then nothing): copy each module out of the
# module cache, drop its replace directives and go.work, pin kubernetes' staging modules to the
# release, build with -mod=mod and the version stamped so kubectl can parse it.
set -euo pipefail
K8S=v1.34.3; ETCD=v3.6.16; KWOK=v0.7.0
CACHE="${1:-${KUBESIGHT_CLUSTER_CACHE:-$HOME/.cache/kubesight/cluster}}"
BIN="$CACHE/bin-$K8S"
want=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
cached() { local b; for b in "${want[@]}"; do [ -x "$BIN/$b" ] || return 1; done; [ -d "$BIN/stages/pod" ]; }
if cached; then echo "cluster build: cached in $BIN"; exit 0; fi
command -v go >/dev/null || { echo "cluster build: Go is not installed: install Go >= 1.26 (https://go.dev/dl); it builds the control plane from the Go module proxy" >&2; exit 2; }
gv=$(go env GOVERSION); gv=${gv#go}; IFS=. read -r gmaj gmin _ <<<"$gv"
if [ "${gmaj:-0}" -lt 1 ] || { [ "$gmaj" -eq 1 ] && [ "${gmin:-0}" -lt 26 ]; }; then
  echo "cluster build: Go $gv is too old: install Go >= 1.26 (https://go.dev/dl; etcd $ETCD needs it)" >&2; exit 2; fi
mkdir -p "$BIN" "$CACHE/src"
# one build at a time (tests, the demo and CI may start together): the others wait, then reuse it
exec 9>"$CACHE/build.lock"
if ! flock -n 9; then echo "cluster build: another build is running; waiting for it"; flock 9; fi
if cached; then echo "cluster build: cached in $BIN"; exit 0; fi
export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOWORK=off
step() { printf 'cluster build: %-28s' "$1"; }
t0=$(date +%s)
fetch() {  # module version dest
  local dir; dir=$(go mod download -json "$1@$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  if [ ! -f "$3/.copied" ]; then
    rm -rf "$3"; cp -r "$dir" "$3"; chmod -R u+w "$3"
    rm -f "$3/go.work" "$3/go.work.sum"
    # drop replace directives (single-line and block form)
    python3 - "$3/go.mod" <<'PY'
import re, sys
p = sys.argv[1]; s = open(p).read()
s = re.sub(r'(?ms)^replace \(\n.*?^\)\n', '', s)
s = re.sub(r'(?m)^replace .*\n', '', s)
open(p, 'w').write(s)
PY
    touch "$3/.copied"
  fi
}
step "download sources"; fetch k8s.io/kubernetes $K8S "$CACHE/src/kubernetes"; fetch go.etcd.io/etcd/server/v3 $ETCD "$CACHE/src/etcd"; fetch sigs.k8s.io/kwok $KWOK "$CACHE/src/kwok"; echo "done"
# kubernetes: pin every staging module (k8s.io/x v0.0.0) to the release
python3 - "$CACHE/src/kubernetes/go.mod" "${K8S#v}" <<'PY'
import re, sys
p, ver = sys.argv[1], sys.argv[2]; s = open(p).read()
s = re.sub(r'(?m)(k8s\.io/[\w.-]+(?:/[\w.-]+)*) v0\.0\.0(?=\s|$)', lambda m: f'{m.group(1)} v0.{ver.split(".",1)[1]}', s)
open(p, 'w').write(s)
PY
LD="-s -w -X k8s.io/component-base/version.gitVersion=$K8S -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34 -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=2025-12-09T00:00:00Z"
build() {  # name dir pkg ldflags
  [ -x "$BIN/$1" ] && { step "$1"; echo "cached"; return; }
  step "$1"; local s; s=$(date +%s)
  (cd "$2" && go build -trimpath -ldflags "$4" -o "$BIN/$1.tmp.$$" "$3") > "$CACHE/build-$1.log" 2>&1 || {
    echo "FAILED"; echo "cluster build: $1 failed; last lines of $CACHE/build-$1.log:" >&2; tail -20 "$CACHE/build-$1.log" >&2; exit 1; }
  mv "$BIN/$1.tmp.$$" "$BIN/$1"; echo "$(( $(date +%s) - s ))s"
}
build kube-apiserver "$CACHE/src/kubernetes" ./cmd/kube-apiserver "$LD"
build kube-controller-manager "$CACHE/src/kubernetes" ./cmd/kube-controller-manager "$LD"
build kube-scheduler "$CACHE/src/kubernetes" ./cmd/kube-scheduler "$LD"
build etcd "$CACHE/src/etcd" . "-s -w"
build kwok "$CACHE/src/kwok" ./cmd/kwok "-s -w"
# kwok's stage files travel with the binaries
rm -rf "$BIN/stages"; mkdir -p "$BIN/stages"; cp -r "$CACHE/src/kwok/kustomize/stage/node" "$CACHE/src/kwok/kustomize/stage/pod" "$BIN/stages/"
echo "cluster build: done in $(( $(date +%s) - t0 ))s -> $BIN"
