# selfmon's container image: `build` compiles the binary, the last stage runs it.
#
#   podman build -t selfmon .        (or docker build; podman needs `--format docker` to keep the HEALTHCHECK)
#   podman run -d -e MONITORING_API_KEY=... -p 127.0.0.1:8000:8000 -p 127.0.0.1:8001:8001 -v selfmon-data:/var/lib/selfmon selfmon
#
# The image of a binary built elsewhere, without compiling anything (as tests/integration/container.rs does): a
# build context named `build` stands in for the stage of that name, which is then not run at all.
#
#   mkdir -p ctx/out && cp target/release/selfmon ctx/out/ && podman build --build-context build=ctx -t selfmon .

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# The bundled SQLCipher links the system's libcrypto (runtime: libssl3).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The toolchain rust-toolchain.toml pins, with the wasm32-wasip2 target the built-in plugins are compiled to, in a
# layer of its own that only a change of the pin rebuilds (as scripts/setup installs it).
COPY rust-toolchain.toml ./
RUN channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml) \
    && rustup toolchain install "$channel" --profile minimal --target wasm32-wasip2
COPY . .
# Crates and the target directory (the nested plugins build's included) in cache mounts, so a rebuild after a
# change compiles what changed only. The binary is copied out of the mount, which the image does not keep.
RUN --mount=type=cache,id=selfmon-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=selfmon-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=selfmon-target,target=/src/target \
    cargo build --release --locked -p selfmon \
    && mkdir -p /out \
    && cp target/release/selfmon /out/selfmon

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="selfmon" \
      org.opencontainers.image.description="Self-hosted monitoring with sandboxed WebAssembly plugins" \
      org.opencontainers.image.licenses="Apache-2.0"
# ca-certificates: HTTPS checks, channels and PostgreSQL's verify-full trust the system's roots. libssl3: the
# libcrypto SQLCipher encrypts with. `apt-get clean` for bases without the official image's docker-clean hook (one
# made with debootstrap keeps 80 MB of package caches otherwise).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
# A user of its own, by number, so that `runAsNonRoot` admission checks can see it is not root. The data folder is
# its own and private (selfmon makes its files 0600); the config and plugins folders are root's, so selfmon may read
# but never change what it runs.
RUN groupadd --system --gid 10001 selfmon \
    && useradd --system --uid 10001 --gid selfmon --home-dir /var/lib/selfmon --no-create-home \
       --shell /usr/sbin/nologin selfmon \
    && install -d -o selfmon -g selfmon -m 0700 /var/lib/selfmon \
    && install -d -m 0755 /etc/selfmon /etc/selfmon/plugins
COPY --from=build /out/selfmon /usr/local/bin/selfmon
COPY packaging/container/selfmon.toml /etc/selfmon/selfmon.toml
ENV SELFMON_CONFIG=/etc/selfmon/selfmon.toml
# A named volume starts as a copy of this folder, owner included, so selfmon can write to it; a bind mount must
# belong to uid 10001.
VOLUME ["/var/lib/selfmon"]
# Where a `.env` is looked for, and where relative paths given on the command line land.
WORKDIR /var/lib/selfmon
USER 10001:10001
# The dashboard, the API.
EXPOSE 8000 8001
# Asks the API's /health at the address the config gives. Podman runs it only where systemd is (or by `podman
# healthcheck run`).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["selfmon", "healthcheck"]
# selfmon is PID 1 and stops on SIGTERM (`podman stop`), committing what it accepted first; it gives requests in
# progress up to 10 seconds, as long as podman and docker wait before SIGKILL, so give `stop -t 30` when long
# requests may be running. Run with `--init` when recovery commands leave processes of their own behind, which
# would otherwise linger as zombies.
ENTRYPOINT ["selfmon"]
CMD ["serve"]
