# understudy: release build, then a distroless runtime that runs as non-root.
#   docker build -t understudy .
#   docker run -p 8080:8080 -p 9901:9901 -v "$PWD/config:/etc/understudy:ro" understudy
# Kubernetes manifests for this image: deploy/kubernetes (see deploy/README.md).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# protoc: the etcd client of fleet mode generates its gRPC code at build time.
# Not version-pinned: Debian replaces a stable package's version in a point
# release and the old one leaves the mirror; the base image pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
# Cargo.toml declares the benchmarks and examples: the manifest needs them.
COPY benches ./benches
# The image carries no debug line tables and no symbols (the release profile
# keeps line tables for profiling on a workstation).
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=symbols
# The context has no .git: build.rs takes the revision for
# understudy_build_info from UNDERSTUDY_REVISION (the REVISION build arg).
ARG REVISION=unknown
RUN UNDERSTUDY_REVISION="${REVISION}" cargo build --release --locked --features fleet --bin understudy \
 && mkdir -p /out/state

# glibc and libgcc only (the binary uses rustls, no OpenSSL); no shell, no
# package manager. User nonroot is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="understudy" \
      org.opencontainers.image.description="Shadow-traffic reverse proxy for rolling out ML model versions safely" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /src/target/release/understudy /usr/local/bin/understudy
COPY config/understudy.toml /etc/understudy/understudy.toml
# The example config writes its rollout state file to the working directory.
COPY --from=build --chown=65532:65532 /out/state /var/lib/understudy
USER 65532:65532
WORKDIR /var/lib/understudy
# 8080: data plane, 9901: admin (/metrics, /healthz, /readyz, /status). The
# example config keeps admin on loopback; to scrape from outside the
# container set admin.addr to 0.0.0.0:9901 and a token
# (UNDERSTUDY_ADMIN_TOKEN), as deploy/kubernetes does.
EXPOSE 8080 9901
ENV UNDERSTUDY_CONFIG=/etc/understudy/understudy.toml
ENTRYPOINT ["/usr/local/bin/understudy"]
CMD ["run"]
