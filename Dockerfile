#
# The s3lock server image: the release binary on a distroless base (glibc, no shell, no package
# manager). See "Docker and docker compose" in README.md.
#
#   docker build -t s3lock:local .
#   docker run --rm -p 127.0.0.1:8080:8080 -v s3lock-data:/data s3lock:local          # local store in /data
#   docker run --rm -p 127.0.0.1:8080:8080 -e S3LOCK_STORE=s3 -e S3LOCK_BUCKET=... s3lock:local
#
# Needs BuildKit (the default builder of Docker 23 and later; `DOCKER_BUILDKIT=1` before that).
#
# Build arguments, for machines that cannot pull these images (scripts/test-docker sets all three):
#   BUILDER_BASE  the Rust toolchain of the build stage.
#   RUNTIME_BASE  what the server runs on: any image with the glibc (and libgcc_s) the binary was
#                 linked against. The runtime stage has no RUN line, so it needs no shell, no
#                 package manager, no useradd. Take debian:bookworm-slim for a shell to debug with.
#   BINARY_FROM   where the binary comes from: `builder` (the stage below) or an image holding the
#                 same files under /out (the binary, the CA bundle, an empty data directory). The
#                 builder stage is then skipped altogether.
ARG BUILDER_BASE=rust:1-bookworm
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12
ARG BINARY_FROM=builder

# ---- build ---------------------------------------------------------------------------------
FROM ${BUILDER_BASE} AS builder
WORKDIR /src

# Only what `cargo build` reads; tests/, scripts/ and .tools/ stay out of the image.
COPY Cargo.toml Cargo.lock ./
COPY src ./src

# BuildKit cache mounts keep downloaded crates and compiled dependencies between builds. The
# target directory is a cache mount, so the binary is copied out in the same step.
# `install -s` strips the binary (32 MiB -> 22 MiB). The CA bundle: the S3 client verifies TLS against the system's root certificates (the rust
# image has them; the runtime base need not).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -s -m 0755 target/release/s3lock /out/usr/local/bin/s3lock \
    && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt \
    && mkdir -p /out/data

# `COPY --from` takes no variable; a stage named after the argument does.
FROM ${BINARY_FROM} AS binary

# ---- run -----------------------------------------------------------------------------------
FROM ${RUNTIME_BASE}

COPY --from=binary /out/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=binary /out/usr/local/bin/s3lock /usr/local/bin/s3lock
# The local store's directory, owned by the fixed non-root uid/gid below, so a host directory
# mounted on /data can be chowned to 10001 too.
COPY --from=binary --chown=10001:10001 /out/data /data

# Listen on all interfaces inside the container (the binary's own default is loopback only), and
# keep the local store's files in the volume. Everything else is configured through S3LOCK_*
# variables; see README.md.
ENV S3LOCK_LISTEN=0.0.0.0:8080 \
    S3LOCK_DATA_DIR=/data

# The local store (the default) keeps its documents here; it takes an exclusive lock on
# /data/LOCK, so one volume serves exactly one container. Unused with S3LOCK_STORE=s3.
VOLUME /data

# A numeric user needs no entry in /etc/passwd (the base may have none).
USER 10001:10001
EXPOSE 8080

# `s3lock healthcheck` asks this container's own server for /healthz (200 whenever the server is
# up; it does not touch the store), on the port of S3LOCK_LISTEN.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["s3lock", "healthcheck"]

# The server stops gracefully on SIGTERM (Docker's default stop signal), finishing in-flight
# requests.
ENTRYPOINT ["s3lock"]
CMD ["serve"]
