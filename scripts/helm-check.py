#!/usr/bin/env python3
"""Content checks of the rendered Helm chart, run by scripts/helm-check.sh.

  helm-check.py rendered RENDERED.yaml config/default.yaml deploy/prometheus/alerts.yml
      - the ConfigMap's config.yaml uses only keys that config/default.yaml has
        (the typed settings) and holds no secret value, only *_file paths;
      - every *_file path in it is under a volume mounted into the container;
      - the pod is hardened (non-root, read-only root fs, no capabilities, no
        privilege escalation, seccomp RuntimeDefault, no service account token);
      - terminationGracePeriodSeconds > shutdown_timeout_secs;
      - a KEDA ScaledObject's maxReplicaCount <= kafka.partitions;
      - a PrometheusRule carries exactly the groups of alerts.yml.
  helm-check.py alerts deploy/prometheus/alerts.yml CHART/files/alerts.yml
      - the two files define the same rules (names, expressions, for, labels,
        annotations); comments and layout may differ.
The last line printed is a one-line summary; exit status 1 on any problem.
"""
import sys

import yaml

SECRET_KEYS = {"password", "secret", "api_keys", "public_key_pem"}


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def unknown_keys(settings, defaults, prefix=""):
    problems = []
    for key, value in settings.items():
        path = prefix + key
        if not isinstance(defaults, dict) or key not in defaults:
            problems.append(f"config.yaml: {path} is not a setting of config/default.yaml")
        elif isinstance(value, dict) and isinstance(defaults[key], dict):
            problems += unknown_keys(value, defaults[key], path + ".")
        elif isinstance(value, dict) != isinstance(defaults[key], dict):
            problems.append(f"config.yaml: {path} has the wrong shape")
    return problems


def secret_values(settings, prefix=""):
    found = []
    for key, value in settings.items():
        path = prefix + key
        if isinstance(value, dict):
            found += secret_values(value, path + ".")
        elif key in SECRET_KEYS and value not in (None, [], ""):
            found.append(f"config.yaml: {path} holds a secret value (use secrets.* and the *_file setting)")
    return found


def file_settings(settings, prefix=""):
    for key, value in settings.items():
        if isinstance(value, dict):
            yield from file_settings(value, prefix + key + ".")
        elif key.endswith("_file") and isinstance(value, str):
            yield prefix + key, value


def check_pod(workload, settings):
    problems = []
    name = f"{workload['kind']} {workload['metadata']['name']}"
    pod = workload["spec"]["template"]["spec"]
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: automountServiceAccountToken is not false")
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
        problems.append(f"{name}: pod does not run as non-root")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: pod seccompProfile is not RuntimeDefault")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= settings.get("shutdown_timeout_secs", 0):
        problems.append(f"{name}: terminationGracePeriodSeconds {grace} <= shutdown_timeout_secs")
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        want = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False}
        for k, v in want.items():
            if sc.get(k) is not v:
                problems.append(f"{name}/{c['name']}: securityContext.{k} is not {v}")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}/{c['name']}: capabilities are not drop [ALL]")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe not in c:
                problems.append(f"{name}/{c['name']}: no {probe}")
        mounts = [m["mountPath"].rstrip("/") + "/" for m in c.get("volumeMounts", [])]
        for key, path in file_settings(settings):
            if path.startswith("/") and not any(path.startswith(m) for m in mounts):
                problems.append(f"{name}/{c['name']}: {key} = {path} is not under a mounted volume")
        env = {e["name"]: e for e in c.get("env", [])}
        for var in ("HTTP_ADDR", "GRPC_ADDR", "METRICS_ADDR"):
            if not str(env.get(var, {}).get("value", "")).startswith("0.0.0.0:"):
                problems.append(f"{name}/{c['name']}: {var} does not bind 0.0.0.0")
        for e in c.get("env", []):
            if "value" in e and any(s in e["name"].upper() for s in ("PASSWORD", "SECRET", "API_KEY")) \
                    and not e["name"].upper().endswith("_FILE"):
                problems.append(f"{name}/{c['name']}: env {e['name']} carries a literal value")
    return problems


def rendered(rendered_path, defaults_path, alerts_path):
    docs = load_all(rendered_path)
    defaults = load(defaults_path)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    problems = []
    configmaps = by_kind.get("ConfigMap", [])
    if len(configmaps) != 1 or "config.yaml" not in configmaps[0].get("data", {}):
        return [f"want one ConfigMap with config.yaml, found {len(configmaps)}"], ""
    settings = yaml.safe_load(configmaps[0]["data"]["config.yaml"]) or {}
    problems += unknown_keys(settings, defaults)
    problems += secret_values(settings)
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    if len(workloads) != 1:
        problems.append(f"want one Deployment or StatefulSet, found {len(workloads)}")
    for w in workloads:
        problems += check_pod(w, settings)
    partitions = settings.get("kafka", {}).get("partitions", defaults["kafka"]["partitions"])
    for so in by_kind.get("ScaledObject", []):
        if so["spec"]["maxReplicaCount"] > partitions:
            problems.append(f"ScaledObject: maxReplicaCount {so['spec']['maxReplicaCount']} > partitions {partitions}")
    rules = 0
    for pr in by_kind.get("PrometheusRule", []):
        want = load(alerts_path)["groups"]
        if pr["spec"]["groups"] != want:
            problems.append("PrometheusRule: groups differ from deploy/prometheus/alerts.yml")
        rules = sum(len(g["rules"]) for g in pr["spec"]["groups"])
    kinds = ", ".join(f"{k}" + (f"x{len(v)}" if len(v) > 1 else "") for k, v in sorted(by_kind.items()))
    summary = f"content ok ({kinds}" + (f"; {rules} alert rules" if rules else "") + ")"
    return problems, summary


def alerts(source_path, copy_path):
    src, cp = load(source_path)["groups"], load(copy_path)["groups"]
    problems = []
    src_rules = {r.get("alert") or r.get("record"): r for g in src for r in g["rules"]}
    cp_rules = {r.get("alert") or r.get("record"): r for g in cp for r in g["rules"]}
    for name in sorted(set(src_rules) | set(cp_rules)):
        if name not in cp_rules:
            problems.append(f"rule {name}: missing from the chart's copy")
        elif name not in src_rules:
            problems.append(f"rule {name}: only in the chart's copy")
        elif src_rules[name] != cp_rules[name]:
            fields = sorted(k for k in set(src_rules[name]) | set(cp_rules[name])
                            if src_rules[name].get(k) != cp_rules[name].get(k))
            problems.append(f"rule {name}: differs in {', '.join(fields)}")
    if not problems and src != cp:
        problems.append("same rules, but grouped or ordered differently")
    return problems, f"{len(src_rules)} rules identical: {', '.join(src_rules)}"


def main(argv):
    modes = {"rendered": (rendered, 3), "alerts": (alerts, 2)}
    if len(argv) < 2 or argv[1] not in modes or len(argv) - 2 != modes[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    func, _ = modes[argv[1]]
    problems, summary = func(*argv[2:])
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s)")
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
