#!/usr/bin/env bash
# Builds the operator's OCI image without a daemon or a registry: the same layout as the
# Dockerfile (a static binary on scratch, CA certificates, user 65532), assembled with umoci
# into target/image/oci (an OCI image layout, tag `greenlight:<version>`). Load it with
# `skopeo copy oci:target/image/oci:greenlight:<version> docker://REGISTRY/greenlight:<version>`.
set -euo pipefail
cd "$(dirname "$0")/.."

target="$(uname -m)-unknown-linux-gnu"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out=target/image
layout="$out/oci"
ref="$layout:greenlight:$version"

# getrandom by raw syscall: a static glibc cannot look the libc wrapper up, and would fall
# back to /dev/urandom, which a scratch root may not have.
RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_raw\"" \
  cargo build --release --locked --bin greenlight --target "$target"
binary="target/$target/release/greenlight"
if readelf -d "$binary" | grep -q '(NEEDED)'; then
  echo "image: $binary is dynamically linked; a scratch image needs a static one" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out"
umoci init --layout "$layout"
umoci new --image "$ref"
umoci unpack --rootless --image "$ref" "$out/bundle" >/dev/null
rootfs="$out/bundle/rootfs"
install -D -m 0755 "$binary" "$rootfs/greenlight"
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
install -D -m 0644 hack/image/passwd "$rootfs/etc/passwd"
install -D -m 0644 hack/image/group "$rootfs/etc/group"
umoci repack --image "$ref" "$out/bundle"
umoci config --image "$ref" \
  --config.entrypoint /greenlight --config.cmd controller \
  --config.user 65532:65532 --config.workingdir / \
  --config.label "org.opencontainers.image.title=greenlight" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.source=https://github.com/greenlight-dev/greenlight"
umoci gc --layout "$layout"
rm -rf "$out/bundle"
size=$(du -sb "$layout/blobs" | cut -f1)
echo "image: $ref ($((size / 1024 / 1024)) MiB of blobs, binary $(($(stat -c %s "$binary") / 1024 / 1024)) MiB)"
