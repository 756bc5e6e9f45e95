# Builds the three services, the console and the tools (audit, rabbitmq-setup, tail-events, tenminute-admin)
# into one small runtime image; compose picks the binary per container with `command:`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
        -p order-service -p store-service -p delivery-service -p console \
        -p audit -p rabbitmq-setup -p tail-events -p tenminute-admin \
    && mkdir -p /out \
    && cp target/release/order-service target/release/store-service \
          target/release/delivery-service target/release/console target/release/audit \
          target/release/rabbitmq-setup target/release/tail-events target/release/tenminute-admin /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
