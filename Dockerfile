# The shopstream binary in a small image. Build: docker build -t shopstream .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin shopstream

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 shopstream
COPY --from=build /src/target/release/shopstream /usr/local/bin/shopstream
USER shopstream
WORKDIR /var/lib/shopstream
ENV SHOPSTREAM_LISTEN=0.0.0.0:8080 SHOPSTREAM_DATA_DIR=/var/lib/shopstream
EXPOSE 8080
ENTRYPOINT ["shopstream"]
CMD ["serve"]
