# syntax=docker/dockerfile:1
# mcpwatch container image (the DaemonSet in packaging/kubernetes runs it).
#   docker build -t ghcr.io/mcpwatch/mcpwatch:0.1.0 .
# Stage 1 builds the agent exactly as `cargo xtask build` does on a host: the pinned
# nightly builds the eBPF programs (bpf-linker against that nightly's LLVM), stable
# builds the agent, which embeds them.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=mcpwatch-target \
    cargo xtask build \
    && install -D -m 0755 target/release/mcpwatch /out/usr/bin/mcpwatch \
    && strip --strip-debug /out/usr/bin/mcpwatch

# Stage 2: the binary and its default configuration on a slim base. The agent links
# only glibc (and libgcc_s); no shell or package manager is needed at run time, but
# bookworm-slim keeps `mcpwatch doctor` debuggable with `kubectl exec`.
FROM debian:bookworm-slim
COPY --from=build /out/usr/bin/mcpwatch /usr/bin/mcpwatch
COPY rules.yaml /etc/mcpwatch/rules.yaml
COPY packaging/kubernetes/base/config.yaml /etc/mcpwatch/config.yaml
ENV MCPWATCH_CONFIG=/etc/mcpwatch/config.yaml
# Root uid: the capabilities come from the pod's securityContext (CAP_BPF, CAP_PERFMON, ...).
USER 0:0
EXPOSE 9477
ENTRYPOINT ["/usr/bin/mcpwatch"]
CMD ["run"]
