#!/bin/sh
# Build operator-console/etcd:local FROM scratch, holding this machine's etcd binary and, when it
# is dynamically linked (Debian's is), the shared libraries it loads. Nothing is pulled.
#
#   ./build-image.sh                   # etcd from PATH
#   ETCD_BIN=/path/to/etcd TAG=my/etcd:3.5 ./build-image.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${ETCD_BIN:-$(command -v etcd || true)}
tag=${TAG:-operator-console/etcd:local}
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "no etcd binary: install etcd-server (apt-get install etcd-server) or set ETCD_BIN" >&2
    exit 1
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/data"
cp "$bin" "$ctx/rootfs/usr/bin/etcd"
# ldd lists nothing for a static binary (and fails): then there is nothing more to copy.
for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' || true); do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done
cp "$here/Dockerfile" "$ctx/Dockerfile"
docker build --quiet --label org.opencontainers.image.title=operator-console-etcd \
    --tag "$tag" "$ctx" >/dev/null
echo "$tag: $("$bin" --version 2>/dev/null | head -n 1) from $bin"
