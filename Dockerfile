# syntax=docker/dockerfile:1
#
# The s3lock server image. Written but never built or run by us: our machines have no Docker
# engine. See "Docker" in README.md.
#
#   docker build -t s3lock .
#   docker run --rm -p 127.0.0.1:8080:8080 -v s3lock-data:/data s3lock            # local store in /data
#   docker run --rm -p 127.0.0.1:8080:8080 -e S3LOCK_STORE=s3 -e S3LOCK_BUCKET=... s3lock

# ---- build ---------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

# Only what `cargo build` reads; tests/, scripts/ and .tools/ stay out of the image.
COPY Cargo.toml Cargo.lock ./
COPY src ./src

# BuildKit cache mounts keep downloaded crates and compiled dependencies between builds. The
# target directory is a cache mount, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/s3lock /usr/local/bin/s3lock

# ---- run -----------------------------------------------------------------------------------
# Same Debian release as the builder, so the binary finds the glibc it was linked against.
FROM debian:bookworm-slim

# ca-certificates: the S3 client verifies TLS against the system's root certificates.
# curl: only for the HEALTHCHECK below. The image has no other HTTP client, and a health check
# that Docker, compose and orchestrators all pick up from the image is worth the few MB.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# A fixed non-root uid/gid, so a host directory mounted on /data can be chowned to 10001.
RUN groupadd --system --gid 10001 s3lock \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin s3lock \
    && mkdir /data \
    && chown 10001:10001 /data

COPY --from=builder /usr/local/bin/s3lock /usr/local/bin/s3lock

# Listen on all interfaces inside the container (the binary's own default is loopback only), and
# keep the local store's files in the volume. Everything else is configured through S3LOCK_*
# variables; see README.md.
ENV S3LOCK_LISTEN=0.0.0.0:8080 \
    S3LOCK_DATA_DIR=/data

# The local store (the default) keeps its documents here; it takes an exclusive lock on
# /data/LOCK, so one volume serves exactly one container. Unused with S3LOCK_STORE=s3.
VOLUME /data

USER 10001:10001
EXPOSE 8080

# /healthz answers 200 whenever the server is up; it does not touch the store. If you change
# S3LOCK_LISTEN's port, change it here too.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--output", "/dev/null", "http://127.0.0.1:8080/healthz"]

# The server stops gracefully on SIGTERM (Docker's default stop signal), finishing in-flight
# requests.
ENTRYPOINT ["s3lock"]
CMD ["serve"]
