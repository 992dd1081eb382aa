#!/bin/bash
# Renders the gateway template (deploy/nginx/gateway.conf, mounted at
# /etc/mt5-nginx/gateway.conf.template) with GATEWAY_LISTEN and
# GATEWAY_UPSTREAMS only (every other `$name` is nginx's), then runs nginx
# in the foreground.
set -euo pipefail
: "${GATEWAY_LISTEN:?}" "${GATEWAY_UPSTREAMS:?}"
envsubst '${GATEWAY_LISTEN} ${GATEWAY_UPSTREAMS}' \
  < /etc/mt5-nginx/gateway.conf.template > /etc/nginx/conf.d/mt5-gateway.conf
nginx -t -q
exec nginx -g 'daemon off;'
