# The Greenlight operator image: one static binary on scratch, with CA certificates, run as a
# non-root user. `make image` builds the same image without a daemon (hack/image.sh, umoci);
# this file is for builders that have one (docker buildx, kaniko, buildah bud).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# glibc linked statically (crt-static): the scratch image has no libc. Nothing resolves names
# through NSS modules: the apiserver is an IP in a pod, and gate clients use getaddrinfo's
# built-in DNS and files sources.
RUN target="$(uname -m)-unknown-linux-gnu" \
 && RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_raw\"" \
    cargo build --release --locked --bin greenlight --target "$target" \
 && cp "target/$target/release/greenlight" /greenlight

FROM debian:bookworm-slim AS certs
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates

FROM scratch
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY hack/image/passwd /etc/passwd
COPY hack/image/group /etc/group
COPY --from=build /greenlight /greenlight
USER 65532:65532
ENTRYPOINT ["/greenlight"]
CMD ["controller"]
