# Local stand-in for softwaremill/elasticmq-native (which cannot be pulled here): the same
# ElasticMQ version's jars (from Maven Central, as scripts/stack.sh fetches them) on Debian's
# JRE. Reads /opt/elasticmq.conf like the native image; wget for the compose health check.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      openjdk-17-jre-headless wget \
 && rm -rf /var/lib/apt/lists/*
COPY lib /opt/elasticmq/lib
ENTRYPOINT ["java", "-Xms64m", "-Xmx512m", "-XX:+ExitOnOutOfMemoryError", \
            "-Dconfig.file=/opt/elasticmq.conf", "-cp", "/opt/elasticmq/lib/*", \
            "org.elasticmq.server.Main"]
