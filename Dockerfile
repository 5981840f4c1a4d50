# understudy: multi-stage release build, non-root runtime.
#   docker build -t understudy .
#   docker run -p 8080:8080 -p 9901:9901 -v $PWD/config:/etc/understudy understudy
FROM rust:1.95-slim-bookworm AS build
# protoc: the etcd client of fleet mode generates its gRPC code at build time.
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --features fleet --bin understudy

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/understudy --shell /usr/sbin/nologin understudy \
 && mkdir -p /etc/understudy /var/lib/understudy \
 && chown understudy:understudy /var/lib/understudy
COPY --from=build /src/target/release/understudy /usr/local/bin/understudy
COPY config/understudy.toml /etc/understudy/understudy.toml
USER 10001:10001
WORKDIR /var/lib/understudy
# 8080: data plane, 9901: admin (/metrics, /status). The example config keeps
# admin on loopback; to scrape from outside the container set admin.addr to
# 0.0.0.0:9901 and a token (UNDERSTUDY_ADMIN_TOKEN).
EXPOSE 8080 9901
ENV UNDERSTUDY_CONFIG=/etc/understudy/understudy.toml
ENTRYPOINT ["/usr/local/bin/understudy"]
CMD ["run"]
