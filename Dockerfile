# Switchboard: a release build with the Swift runtime linked statically, in a slim image that runs as a non-root user.
#   docker build -t switchboard .
#   docker run -p 8080:8080 switchboard

FROM swift:6.3-bookworm AS build
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
# The gateway's resource bundle (OpenAPI document, dashboard, browser client) is a directory beside the binary.
RUN swift build -c release --static-swift-stdlib --product switchboard \
    && bin="$(swift build -c release --show-bin-path)" \
    && install -D "$bin/switchboard" /out/switchboard \
    && cp -R "$bin/switchboard_SwitchboardGateway.resources" /out/

FROM debian:bookworm-slim
# libcurl backs the operator commands (send, connections, health); ca-certificates verifies rediss:// and https.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libcurl4 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin switchboard
COPY --from=build /out/switchboard /app/switchboard
COPY --from=build /out/switchboard_SwitchboardGateway.resources /app/switchboard_SwitchboardGateway.resources
USER switchboard
WORKDIR /app
EXPOSE 8080
# SIGTERM drains: /health turns 503, clients get 1001, every $disconnect runs, then exit 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["/app/switchboard", "health"]
ENTRYPOINT ["/app/switchboard"]
CMD ["serve"]
