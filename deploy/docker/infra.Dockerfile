# NATS, Redis (and Sentinel) and nginx from Debian 12's own packages, on the
# Debian base `build-images.sh` imports. No network inside any step: the
# .deb files (with their dependencies, resolved against that base) are
# downloaded by build-images.sh on the host and come in through the build
# context (debs/<target>/). One target per image:
#   docker build -f deploy/docker/infra.Dockerfile --target nats CONTEXT
ARG BASE_IMAGE=mt5-debian:bookworm

FROM ${BASE_IMAGE} AS nats
COPY debs/nats/ /tmp/debs/
RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs /var/log/dpkg.log \
 && mkdir -p /data && chown 10002:10002 /data
# Any uid works: the store is a volume (compose) or fsGroup-owned (k8s).
USER 10002:10002
EXPOSE 4222 6222 8222
CMD ["nats-server", "-js"]

FROM ${BASE_IMAGE} AS redis
COPY debs/redis/ /tmp/debs/
RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs /var/log/dpkg.log \
 && mkdir -p /data && chown 10003:10003 /data
USER 10003:10003
WORKDIR /data
EXPOSE 6379 26379
CMD ["redis-server", "--save", "", "--appendonly", "no"]

FROM ${BASE_IMAGE} AS nginx
COPY debs/nginx/ /tmp/debs/
COPY nginx-start.sh /usr/local/bin/nginx-start
RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs /var/log/dpkg.log \
 && rm -f /etc/nginx/sites-enabled/default \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx-start"]
