#!/usr/bin/env python3
"""Keeps the deployment files honest (no Docker engine or cluster here):
every YAML document parses; every environment variable they set is one the
gateway or the ingestor reads; files they mount or build exist; the nginx
template, rendered the way docker-compose renders it, passes `nginx -t`.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
problems = []


def known_env():
    names = {"RUST_LOG"}
    paths = glob.glob(os.path.join(ROOT, "gateway/src/config/*.rs"))
    for path in paths + [os.path.join(ROOT, "ingestor/src/config.rs")]:
        with open(path) as f:
            names |= set(re.findall(r'env = "([A-Z0-9_]+)"', f.read()))
    return names


KNOWN = known_env()


def check_env(where, env):
    for name in env:
        if name not in KNOWN:
            problems.append(f"{where}: {name} is read by neither the gateway nor the ingestor")


def docs(path):
    with open(os.path.join(ROOT, path)) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# docker-compose.yml
compose = docs("docker-compose.yml")[0]
for name, svc in compose["services"].items():
    if name in ("nats", "redis", "nginx", "jaeger"):
        continue
    env = svc.get("environment", {})
    check_env(f"docker-compose.yml service {name}", env.keys())
for name, svc in compose["services"].items():
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith("./") and not os.path.exists(os.path.join(ROOT, src)):
            problems.append(f"docker-compose.yml service {name} mounts missing {src}")
if not os.path.exists(os.path.join(ROOT, "Dockerfile")):
    problems.append("Dockerfile is missing")

# deploy/k8s
kustomization = docs("deploy/k8s/kustomization.yaml")[0]
for res in kustomization["resources"]:
    for doc in docs(os.path.join("deploy/k8s", res)):
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        if not kind or not name:
            problems.append(f"deploy/k8s/{res}: a document without kind or name")
        if kind == "ConfigMap" or kind == "Secret":
            check_env(f"{res} {kind} {name}", (doc.get("data") or doc.get("stringData") or {}).keys())
        if kind in ("Deployment", "StatefulSet"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                if c["image"].startswith("mt5-gateway"):
                    check_env(f"{res} {name}", [e["name"] for e in c.get("env", [])])

# nginx: the template rendered as the official image does, then `nginx -t`.
nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
if nginx:
    env = compose["services"]["nginx"]["environment"]
    with open(os.path.join(ROOT, "deploy/nginx/gateway.conf")) as f:
        conf = f.read()
    upstreams = env["GATEWAY_UPSTREAMS"].replace("gateway1", "127.0.0.1").replace("gateway2", "127.0.0.2").replace("gateway3", "127.0.0.3")
    conf = conf.replace("${GATEWAY_UPSTREAMS}", upstreams).replace("${GATEWAY_LISTEN}", "127.0.0.1:18089")
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "site.conf"), "w") as f:
            f.write(conf)
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write(f"pid {tmp}/nginx.pid; error_log {tmp}/error.log;\n"
                    f"events {{}}\nhttp {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};"
                    f" fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};"
                    f" include {tmp}/site.conf; }}\n")
        out = subprocess.run([nginx, "-t", "-p", tmp, "-c", f"{tmp}/nginx.conf"], capture_output=True, text=True)
        if out.returncode != 0:
            problems.append("nginx -t on the rendered deploy/nginx/gateway.conf:\n" + out.stderr)
else:
    print("nginx not installed: skipping nginx -t")

if problems:
    print("deployment files:\n- " + "\n- ".join(problems))
    sys.exit(1)
print("deployment files ok")
