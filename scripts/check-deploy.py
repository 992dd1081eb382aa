#!/usr/bin/env python3
"""Keeps the deployment files honest without a cluster (the compose file is
also run for real by scripts/compose-test.sh):

- every YAML document parses; every environment variable the compose file
  and the manifests give our binaries is one they read; mounted files exist;
- docker-compose.yml: nothing published but nginx (on loopback by default),
  secrets required (`${JWT_SECRET:?}`, no default secret anywhere), every
  service but nginx on internal networks only, nginx's upstreams fixed
  addresses of the gateway services, every NATS node and client given the
  whole cluster, no image from a registry or tagged `latest`;
- the nginx template, rendered as docker-compose renders it, passes
  `nginx -t` and keeps /metrics from the edge;
- Dockerfile: pinned images, numeric user;
- deploy/k8s rendered with kustomize (`kubectl kustomize`, or the small
  renderer below when kubectl is missing), validated with
  `kubernetes-validate` for every supported Kubernetes version, and checked
  for the Pod Security "restricted" rules and the points of issue 14
  (pinned images, numeric users, probes, resources, PDBs, HPA behaviour,
  no replica count fighting the HPA, no shipped secret, the NATS auth
  config equal to deploy/nats/auth.conf, Redis never a Deployment).
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
# The Kubernetes versions the README promises (kubernetes-validate schemas).
K8S_VERSIONS = [f"1.{m}.0" for m in range(29, 38)]
problems = []


def problem(msg):
    problems.append(msg)


def known_env():
    names = {"RUST_LOG"}
    for path in glob.glob(os.path.join(ROOT, "gateway/src/**/*.rs"), recursive=True) + glob.glob(
        os.path.join(ROOT, "ingestor/src/**/*.rs"), recursive=True
    ):
        with open(path) as f:
            names |= set(re.findall(r'env = "([A-Z0-9_]+)"', f.read()))
    return names


KNOWN = known_env()


def check_env(where, env):
    for name in env:
        if name not in KNOWN:
            problem(f"{where}: {name} is read by neither the gateway nor the ingestor")


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def docs(path):
    return [d for d in yaml.safe_load_all(read(path)) if d is not None]


# ---------------------------------------------------------------- compose
COMPOSE_TEXT = read("docker-compose.yml")
compose = docs("docker-compose.yml")[0]
services = compose["services"]
OURS = {n for n, s in services.items() if str(s.get("image", "")).startswith("mt5-gateway")}
networks = compose.get("networks", {})
internal = {n for n, cfg in networks.items() if (cfg or {}).get("internal")}

for name, svc in services.items():
    if name in OURS:
        check_env(f"docker-compose.yml service {name}", (svc.get("environment") or {}).keys())
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith("./") and not os.path.exists(os.path.join(ROOT, src)):
            problem(f"docker-compose.yml service {name} mounts missing {src}")
    image = str(svc.get("image", ""))
    if "/" in image.split(":")[0] or image.endswith(":latest") or ":" not in image:
        problem(f"docker-compose.yml service {name}: image {image!r} must be a locally built, tagged image")
    if "build" in svc:
        problem(f"docker-compose.yml service {name}: images are built by deploy/docker/build-images.sh, not compose")
    if svc.get("ports") and name != "nginx":
        problem(f"docker-compose.yml service {name} publishes {svc['ports']}: only nginx may")
    nets = svc.get("networks")
    if name != "nginx" and svc.get("network_mode") != "none":
        names = list(nets.keys()) if isinstance(nets, dict) else list(nets or ["default"])
        outside = [n for n in names if n not in internal]
        if outside:
            problem(f"docker-compose.yml service {name} is on non-internal networks {outside}")
for port in services.get("nginx", {}).get("ports", []):
    if not str(port).startswith("${MT5_HTTP_BIND:-127.0.0.1}:"):
        problem(f"docker-compose.yml nginx publishes {port}: bind it to loopback by default")
if "${JWT_SECRET:?" not in COMPOSE_TEXT:
    problem("docker-compose.yml: JWT_SECRET must be required (${JWT_SECRET:?...})")
for m in re.finditer(r"\$\{([A-Z_]*(?:SECRET|PASSWORD)[A-Z_]*):-", COMPOSE_TEXT):
    problem(f"docker-compose.yml: {m.group(1)} has a default value; secrets must be required")
# nginx's upstreams: addresses (nginx 1.22 resolves names only at start),
# each the fixed address of a gateway service.
subnet = re.search(r"\$\{MT5_SUBNET:-([0-9.]+)\}", COMPOSE_TEXT)
subnet = subnet.group(1) if subnet else ""


def expand(text):
    return re.sub(r"\$\{MT5_SUBNET:-[0-9.]+\}", subnet, str(text))


gateway_addrs = set()
for name in OURS:
    nets = services[name].get("networks")
    if isinstance(nets, dict):
        for cfg in nets.values():
            if cfg and cfg.get("ipv4_address"):
                gateway_addrs.add(expand(cfg["ipv4_address"]))
upstreams_raw = services.get("nginx", {}).get("environment", {}).get("GATEWAY_UPSTREAMS", "")
upstreams = expand(upstreams_raw)
listed = set(re.findall(r"server\s+([^\s:;]+):\d+", upstreams))
for host in listed:
    if not re.fullmatch(r"[0-9.]+", host):
        problem(f"docker-compose.yml nginx upstream {host}: use the replica's fixed address, not a name")
servers_with_gateway = {n for n in OURS if "command" not in services[n] and "profiles" not in services[n]}
if listed != gateway_addrs or len(listed) != len(servers_with_gateway):
    problem(f"docker-compose.yml: nginx upstreams {sorted(listed)} are not the gateways' fixed addresses {sorted(gateway_addrs)}")
if "max_fails=0" not in upstreams_raw:
    problem("docker-compose.yml: nginx upstreams need max_fails=0 (deploy/nginx/README.md)")
nats_nodes = sorted(n for n, s in services.items() if str(s.get("image", "")).startswith("mt5-nats"))
if len(nats_nodes) < 3:
    problem(f"docker-compose.yml: {len(nats_nodes)} NATS nodes; a cluster needs 3")
for name in OURS:
    env = services[name].get("environment") or {}
    url = str(env.get("NATS_URL", ""))
    if url and any(f"@{node}:4222" not in url for node in nats_nodes):
        problem(f"docker-compose.yml service {name}: NATS_URL must list every node {nats_nodes}")
    if url and str(env.get("STREAM_REPLICAS")) != "3":
        problem(f"docker-compose.yml service {name}: STREAM_REPLICAS must be 3 on a 3-node cluster")
sentinels = [n for n in services if n.startswith("sentinel")]
if len(sentinels) < 3:
    problem("docker-compose.yml: Redis needs three sentinels")

# ---------------------------------------------------------------- nginx
template = read("deploy/nginx/gateway.conf")
if not re.search(r"location\s*=\s*/metrics\s*\{[^}]*return\s+404", template):
    problem("deploy/nginx/gateway.conf: /metrics must not be served at the edge")
m = re.search(r"proxy_connect_timeout\s+(\d+)(ms|s);", template)
if not m or (int(m.group(1)) * (1 if m.group(2) == "ms" else 1000)) > 500:
    problem("deploy/nginx/gateway.conf: proxy_connect_timeout must be short (a dead container does not refuse)")
nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
if nginx:
    conf = template.replace("${GATEWAY_UPSTREAMS}", upstreams).replace("${GATEWAY_LISTEN}", "127.0.0.1:18089")
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
            problem("nginx -t on the rendered deploy/nginx/gateway.conf:\n" + out.stderr)
else:
    print("nginx not installed: skipping nginx -t")

# ---------------------------------------------------------------- Dockerfile
dockerfile = read("Dockerfile")
for arg, value in re.findall(r"^ARG (\w+_IMAGE)=(\S+)", dockerfile, re.M):
    if arg == "RUST_IMAGE" and not re.fullmatch(r"rust:\d+\.\d+\.\d+-[\w-]+", value):
        problem(f"Dockerfile: {arg}={value} must pin the toolchain (rust:X.Y.Z-...)")
    if value.endswith(":latest") or ":" not in value:
        problem(f"Dockerfile: {arg}={value} is not pinned")
for user in re.findall(r"^USER (\S+)", dockerfile, re.M):
    if not re.fullmatch(r"\d+(:\d+)?", user) or user.split(":")[0] == "0":
        problem(f"Dockerfile: USER {user} must be a numeric non-root uid (runAsNonRoot checks it)")
if "STRIP" not in dockerfile:
    problem("Dockerfile: the source build must strip the binaries")

# ---------------------------------------------------------------- NATS
auth = read("deploy/nats/auth.conf")

# ---------------------------------------------------------------- k8s


def kustomize_python(base):
    """A small kustomize for this directory (resources, images, labels),
    used when kubectl is not installed."""
    kust = yaml.safe_load(read(os.path.join(base, "kustomization.yaml")))
    out = []
    for res in kust.get("resources", []):
        out.extend(docs(os.path.join(base, res)))
    images = {i["name"]: i for i in kust.get("images", [])}
    labels = {}
    for entry in kust.get("labels", []):
        labels.update(entry.get("pairs", {}))
    for doc in out:
        doc.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            name = c["image"].split(":")[0]
            if name in images:
                img = images[name]
                c["image"] = f"{img.get('newName', name)}:{img['newTag']}" if "newTag" in img else img.get("newName", name)
    return out


def render_k8s():
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", os.path.join(ROOT, "deploy/k8s")], capture_output=True, text=True)
        if out.returncode != 0:
            problem("kubectl kustomize deploy/k8s failed:\n" + out.stderr)
            return [], ""
        return [d for d in yaml.safe_load_all(out.stdout) if d], out.stdout
    print("kubectl not installed: rendering deploy/k8s with the built-in kustomize subset")
    rendered = kustomize_python("deploy/k8s")
    return rendered, yaml.safe_dump_all(rendered)


objects, rendered = render_k8s()

validator = shutil.which("kubernetes-validate")
if rendered and validator:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(rendered)
        f.flush()
        for version in K8S_VERSIONS:
            out = subprocess.run([validator, "--quiet", "--strict", "-k", version, f.name], capture_output=True, text=True)
            if out.returncode != 0:
                problem(f"kubernetes-validate -k {version}:\n{out.stdout}{out.stderr}")
        print(f"deploy/k8s valid for Kubernetes {K8S_VERSIONS[0]} to {K8S_VERSIONS[-1]}")
elif rendered:
    problem("kubernetes-validate is not installed (pip install kubernetes-validate; scripts/test.sh does)")

ALLOWED_VOLUMES = {"configMap", "emptyDir", "projected", "secret", "downwardAPI", "persistentVolumeClaim", "ephemeral", "csi"}
by_kind = {}
for doc in objects:
    by_kind.setdefault(doc["kind"], []).append(doc)
hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])}
pdb_selectors = [p["spec"]["selector"]["matchLabels"] for p in by_kind.get("PodDisruptionBudget", [])]
config_maps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
services_k8s = {s["metadata"]["name"] for s in by_kind.get("Service", [])}

for kind in ("Secret",):
    for doc in by_kind.get(kind, []):
        if doc.get("data") or doc.get("stringData"):
            problem(f"deploy/k8s ships Secret {doc['metadata']['name']} with values: secrets are created by the operator")
for cm in config_maps.values():
    for key, value in (cm.get("data") or {}).items():
        if key == "OTEL_EXPORTER_OTLP_ENDPOINT":
            host = re.sub(r"^\w+://", "", value).split(":")[0].split(".")[0]
            if host not in services_k8s:
                problem(f"ConfigMap {cm['metadata']['name']}: {key} points at {host}, which nothing deploys")

for doc in by_kind.get("Deployment", []) + by_kind.get("StatefulSet", []):
    kind, name = doc["kind"], doc["metadata"]["name"]
    where = f"deploy/k8s {kind} {name}"
    spec = doc["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    psc = pod.get("securityContext", {})
    if name in hpa_targets and "replicas" in spec:
        problem(f"{where}: sets replicas while an HPA scales it (every apply resets the count)")
    replicas = spec.get("replicas", 3 if name in hpa_targets else 1)
    if "redis" in name and kind != "StatefulSet":
        problem(f"{where}: Redis must be a StatefulSet (two Deployment pods split the sessions)")
    if replicas > 1:
        if not any(all(labels.get(k) == v for k, v in sel.items()) for sel in pdb_selectors):
            problem(f"{where}: {replicas} replicas and no PodDisruptionBudget")
        if not pod.get("topologySpreadConstraints"):
            problem(f"{where}: no topologySpreadConstraints (replicas may share a node)")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problem(f"{where}: {key} is not allowed (Pod Security restricted)")
    for vol in pod.get("volumes", []):
        types = set(vol) - {"name"}
        if not types <= ALLOWED_VOLUMES:
            problem(f"{where}: volume {vol['name']} of type {types} not allowed (restricted)")
        if "configMap" in vol and vol["configMap"]["name"] not in config_maps:
            problem(f"{where}: volume {vol['name']} mounts missing ConfigMap {vol['configMap']['name']}")
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        cwhere = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        image = c["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        if "@sha256:" not in image and (not tag or tag == "latest"):
            problem(f"{cwhere}: image {image} is not pinned (kustomization images: newTag)")
        if image.startswith("mt5-"):
            problem(f"{cwhere}: image {image} names no registry (kustomization images: newName)")
        if c.get("imagePullPolicy") == "Never":
            problem(f"{cwhere}: imagePullPolicy Never")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        user = sc.get("runAsUser", psc.get("runAsUser"))
        if non_root is not True:
            problem(f"{cwhere}: runAsNonRoot must be true (restricted)")
        if not isinstance(user, int) or user == 0:
            problem(f"{cwhere}: runAsUser must be a numeric non-root uid")
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(f"{cwhere}: allowPrivilegeEscalation must be false (restricted)")
        if sc.get("privileged"):
            problem(f"{cwhere}: privileged (restricted)")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problem(f"{cwhere}: capabilities must drop ALL (restricted)")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problem(f"{cwhere}: adds capabilities {caps['add']} (restricted)")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problem(f"{cwhere}: seccompProfile RuntimeDefault required (restricted)")
        if not sc.get("readOnlyRootFilesystem"):
            problem(f"{cwhere}: readOnlyRootFilesystem")
        res = c.get("resources", {})
        if not res.get("requests") or "memory" not in res.get("limits", {}):
            problem(f"{cwhere}: needs resource requests and a memory limit")
        is_service = bool(c.get("ports")) and not (c.get("args") or [""])[0] == "ingestor"
        if is_service:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    problem(f"{cwhere}: no {probe}")
            ready = c.get("readinessProbe", {})
            if ready.get("failureThreshold", 3) < 2:
                problem(f"{cwhere}: readinessProbe failureThreshold < 2 flaps on one slow answer")
        pre = c.get("lifecycle", {}).get("preStop", {})
        if "sleep" in pre:
            problem(f"{cwhere}: preStop.sleep needs Kubernetes 1.30 (supported from {K8S_VERSIONS[0]})")
        if image.split("/")[-1].startswith("gateway"):
            check_env(cwhere, [e["name"] for e in c.get("env", []) if not e["name"].startswith("NATS_") or e["name"] == "NATS_URL"])
            for ref in c.get("envFrom", []):
                cm = ref.get("configMapRef", {}).get("name")
                if cm in config_maps:
                    check_env(f"{cwhere} ConfigMap {cm}", (config_maps[cm].get("data") or {}).keys())
        env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
        if "NATS_URL" in env:
            missing = [i for i in range(3) if f"nats-{i}.nats:4222" not in env["NATS_URL"]]
            if missing:
                problem(f"{cwhere}: NATS_URL must list every NATS node")

for hpa in by_kind.get("HorizontalPodAutoscaler", []):
    down = hpa["spec"].get("behavior", {}).get("scaleDown", {})
    if down.get("stabilizationWindowSeconds", 0) < 300 or not down.get("policies"):
        problem(f"HPA {hpa['metadata']['name']}: scale down slowly (stabilizationWindowSeconds >= 300, a policy)")
for pdb in by_kind.get("PodDisruptionBudget", []):
    if pdb["spec"].get("maxUnavailable") != 1:
        problem(f"PDB {pdb['metadata']['name']}: maxUnavailable must be 1 (one replica at a time)")
for ing in by_kind.get("Ingress", []):
    ann = ing["metadata"].get("annotations", {})
    if not ing["spec"].get("tls"):
        problem(f"Ingress {ing['metadata']['name']}: no tls")
    if ann.get("nginx.ingress.kubernetes.io/affinity") == "cookie":
        problem(f"Ingress {ing['metadata']['name']}: cookie affinity fails for cross-origin and Node clients")
    if any(k.endswith("-snippet") for k in ann):
        problem(f"Ingress {ing['metadata']['name']}: snippet annotations are disabled by default in ingress-nginx")
metrics_blocked = any(
    p.get("path") == "/metrics" and p.get("pathType") == "Exact"
    and "denylist-source-range" in " ".join(i["metadata"].get("annotations", {}))
    for i in by_kind.get("Ingress", []) for r in i["spec"].get("rules", []) for p in r["http"]["paths"]
)
if by_kind.get("Ingress") and not metrics_blocked:
    problem("deploy/k8s: /metrics is served through the Ingress")
nats_sets = [s for s in by_kind.get("StatefulSet", []) if s["metadata"]["name"] == "nats"]
if not nats_sets or nats_sets[0]["spec"].get("replicas") != 3:
    problem("deploy/k8s: NATS must be a 3-node StatefulSet")
nats_cm = config_maps.get("nats", {}).get("data", {})
if nats_cm.get("auth.conf", "").strip() != auth.strip():
    problem("deploy/k8s/nats.yaml: auth.conf differs from deploy/nats/auth.conf")

if problems:
    print("deployment files:\n- " + "\n- ".join(problems))
    sys.exit(1)
print("deployment files ok")
