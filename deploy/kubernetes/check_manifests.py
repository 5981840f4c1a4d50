#!/usr/bin/env python3
"""Checks one rendered overlay (`kubectl kustomize OVERLAY`) beyond schema
validation: what makes the kit work rather than merely parse.

* The ServiceMonitor (a CRD, unknown to Kubernetes' own schemas) against the
  Prometheus Operator's schema, from the pinned PyPI package
  cloudcoil-models-prometheus-operator, with unknown fields refused.
* The understudy container: probes on the admin port's real paths, the
  securityContext, resources, the admin token from a Secret.
* References line up: Services select the Pods and name real container
  ports, the ServiceMonitor selects the admin Service and its port, the
  config is mounted where the args point, the state file is on a writable
  volume, the config's ports are the container's ports, draining ends
  before the grace period.

Usage: check_manifests.py RENDERED.yaml CONFIG_OUT.toml
Writes the ConfigMap's understudy.toml to CONFIG_OUT.toml for
`understudy check`. Exits 1 with every problem found.
"""
import posixpath
import sys
import tomllib

import yaml
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

CONFIG_DIR = "/etc/understudy"
problems = []


def need(condition, message):
    if not condition:
        problems.append(message)
    return condition


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def seconds(duration):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if duration.endswith(unit):
            return float(duration[: -len(unit)]) * units[unit]
    raise ValueError(duration)


def check_service_monitor(doc):
    name = doc["metadata"]["name"]
    try:
        model = ServiceMonitor.model_validate(doc)
    except Exception as error:  # pydantic's ValidationError lists every field
        problems.append(f"ServiceMonitor {name}: {error}")
        return
    dumped = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    need(dumped == doc, f"ServiceMonitor {name}: fields outside the schema: {doc} != {dumped}")


def main(rendered_path, config_out):
    docs = [d for d in yaml.safe_load_all(open(rendered_path)) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    for doc in by_kind.get("ServiceMonitor", []):
        check_service_monitor(doc)

    deployments = by_kind.get("Deployment", [])
    if not need(len(deployments) == 1, f"expected one Deployment, found {len(deployments)}"):
        return
    deployment = deployments[0]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    need(selects(deployment["spec"]["selector"]["matchLabels"], pod_labels), "Deployment selector misses its Pods")
    containers = {c["name"]: c for c in spec["containers"]}
    proxy = containers.get("understudy")
    if not need(proxy is not None, "no container named understudy"):
        return
    ports = {p["name"]: p["containerPort"] for p in proxy.get("ports", [])}
    need({"http", "admin"} <= ports.keys(), f"understudy ports {ports}: need http and admin")

    # Probes: the admin port's real endpoints.
    for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        get = proxy.get(probe, {}).get("httpGet", {})
        need(get.get("path") == path and get.get("port") == "admin", f"{probe}: want GET {path} on admin, got {get}")

    # securityContext: container level, seccomp at container or Pod level.
    sc = proxy.get("securityContext", {})
    pod_sc = spec.get("securityContext", {})
    need(sc.get("runAsNonRoot") is True, "runAsNonRoot is not true")
    need(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
    need(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    need("ALL" in sc.get("capabilities", {}).get("drop", []), "capabilities do not drop ALL")
    seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
    need(seccomp.get("type") == "RuntimeDefault", "seccompProfile is not RuntimeDefault")

    resources = proxy.get("resources", {})
    need({"cpu", "memory"} <= resources.get("requests", {}).keys(), "resources.requests needs cpu and memory")
    need("memory" in resources.get("limits", {}), "resources.limits needs memory")

    env = {e["name"]: e for e in proxy.get("env", [])}
    token = env.get("UNDERSTUDY_ADMIN_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
    need(bool(token and token.get("name") and token.get("key")), "UNDERSTUDY_ADMIN_TOKEN is not from a Secret")

    # Config: a ConfigMap mounted where --config points.
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in proxy.get("volumeMounts", [])}
    args = proxy.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else None
    need(config_path == f"{CONFIG_DIR}/understudy.toml", f"--config is {config_path}")
    config_mount = mounts.get(CONFIG_DIR)
    if not need(config_mount is not None, f"nothing mounted at {CONFIG_DIR}"):
        return
    config_map_name = volumes[config_mount["name"]].get("configMap", {}).get("name")
    config_maps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    if not need(config_map_name in config_maps, f"ConfigMap {config_map_name} is not in the overlay"):
        return
    text = config_maps[config_map_name]["data"].get("understudy.toml")
    if not need(text is not None, f"ConfigMap {config_map_name} has no understudy.toml"):
        return
    with open(config_out, "w") as out:
        out.write(text)
    config = tomllib.loads(text)

    need(port_of(config["listen"]["addr"]) == ports.get("http"), "listen.addr port is not the http containerPort")
    admin_addr = config.get("admin", {}).get("addr", "127.0.0.1:9901")
    need(port_of(admin_addr) == ports.get("admin"), "admin.addr port is not the admin containerPort")
    need(not admin_addr.startswith("127."), "admin.addr is loopback: probes and Prometheus cannot reach it")
    drain = seconds(config["listen"].get("drain_timeout", "30s"))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    need(drain < grace, f"listen.drain_timeout {drain}s is not below terminationGracePeriodSeconds {grace}")

    state_file = config.get("rollout", {}).get("state_file")
    if state_file:
        state_dir = posixpath.dirname(state_file)
        mount = mounts.get(state_dir)
        writable = mount and not mount.get("readOnly") and (
            "emptyDir" in volumes[mount["name"]] or "persistentVolumeClaim" in volumes[mount["name"]])
        need(posixpath.isabs(state_file) and writable,
             f"rollout.state_file {state_file}: its directory is not a writable volume")

    # Services select the Pods and name the container's ports.
    services = by_kind.get("Service", [])
    for service in services:
        name = service["metadata"]["name"]
        need(selects(service["spec"].get("selector"), pod_labels), f"Service {name} does not select the Pods")
        for port in service["spec"]["ports"]:
            need(port["targetPort"] in ports, f"Service {name}: targetPort {port['targetPort']} is no port of understudy")

    # The ServiceMonitor selects the admin Service and scrapes its admin port.
    monitors = by_kind.get("ServiceMonitor", [])
    need(len(monitors) == 1, f"expected one ServiceMonitor, found {len(monitors)}")
    for monitor in monitors:
        chosen = [s for s in services if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
        need(len(chosen) == 1, f"ServiceMonitor selects {len(chosen)} Services, want the admin one")
        for endpoint in monitor["spec"]["endpoints"]:
            need(endpoint.get("path", "/metrics") == "/metrics", "ServiceMonitor path is not /metrics")
            for service in chosen:
                by_name = {p["name"]: p for p in service["spec"]["ports"]}
                port = by_name.get(endpoint["port"])
                need(port is not None and port["targetPort"] == "admin",
                     f"ServiceMonitor port {endpoint['port']} is not the admin port of {service['metadata']['name']}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)
