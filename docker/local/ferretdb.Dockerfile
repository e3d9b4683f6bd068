# Local stand-in for mongo:8 (which cannot be pulled here): FerretDB v1.24.2 on
# PostgreSQL 15, one container. Built by scripts/container_check.sh with the binary that
# scripts/stack.sh builds from FerretDB's Go module; used by docker-compose.local.yml.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
# No default cluster: the entrypoint makes its own in /data/db (compose mounts mongo-data there).
RUN mkdir -p /etc/postgresql-common \
 && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/*
COPY ferretdb /usr/local/bin/ferretdb
COPY ferretdb-start.sh /usr/local/bin/ferretdb-start
ENTRYPOINT ["/usr/local/bin/ferretdb-start"]
