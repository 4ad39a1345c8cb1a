# The widget store's five services in one image (docker-compose.yml runs one
# container per service, each with its own command). Multi-stage: a full
# Debian 12 toolchain builds the services with the project's Makefile; the
# runtime stage has only the shared libraries, psql (for scripts/migrate.sh)
# and curl (for health checks).

FROM debian:12 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential pkg-config \
      librdkafka-dev libpq-dev libmicrohttpd-dev libcjson-dev libssl-dev uuid-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY shared/ shared/
COPY services/ services/
RUN make -j"$(nproc)" services

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      librdkafka1 libpq5 libmicrohttpd12 libcjson1 libssl3 libuuid1 \
      postgresql-client curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin widgetstore
# The repository's layout, so that the services' relative defaults
# (API_PAGE_PATH=services/api/page.html) and scripts/migrate.sh (sql/) work
# from the working directory /app.
WORKDIR /app
COPY --from=build /src/build/services/ /app/bin/
COPY scripts/ /app/scripts/
COPY sql/ /app/sql/
COPY services/api/page.html /app/services/api/page.html
USER widgetstore
ENV KAFKA_BROKERS=kafka:9092 \
    LOG_LEVEL=info
# docker-compose.yml gives each container its command (/app/bin/NAME, or
# scripts/migrate.sh for the one-shot migrations).
CMD ["/app/bin/api"]
