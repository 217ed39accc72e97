# syntax=docker/dockerfile:1
# pgmoat links libpg_query through cgo, so the build stage needs a C
# toolchain and the binary needs glibc at run time.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/pgmoat ./cmd/pgmoat

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin pgmoat
COPY --from=build /out/pgmoat /usr/local/bin/pgmoat
COPY examples/pgmoat.yaml /etc/pgmoat/pgmoat.yaml
USER pgmoat
EXPOSE 6432 6433
ENTRYPOINT ["/usr/local/bin/pgmoat"]
CMD ["serve", "--config", "/etc/pgmoat/pgmoat.yaml", "--listen", "0.0.0.0:6432"]
