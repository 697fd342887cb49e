#!/usr/bin/env python3
"""Generate strict kubeconform JSON schemas for a few Kubernetes kinds, offline.

kubeconform normally downloads its schemas; CI here cannot. This script reads the
OpenAPI v2 spec (`api/openapi-spec/swagger.json`) that the `k8s.io/kubernetes` Go
module carries and writes one standalone schema per kind, in kubeconform's layout:

    {kind}-{group}-{version}.json    e.g. deployment-apps-v1.json, service-v1.json

(lower case; the core group has no group part). Every `$ref` is inlined, every
object that lists its properties gets `additionalProperties: false` (strict: a
misspelt or misplaced field fails), IntOrString / Quantity accept a string or a
number, and `apiVersion` / `kind` must be exactly the kind's. Optional fields
accept null, as in the schemas kubeconform downloads (openapi2jsonschema --strict).

    go mod download -json k8s.io/kubernetes@v1.36.3          # prints "Dir"
    scripts/k8s-schemas.py DIR/api/openapi-spec/swagger.json deploy/helm/schemas \\
        Deployment.apps/v1 Service.v1 ...

Only the standard library; the output is deterministic (sorted keys).
"""
import copy
import json
import os
import sys

QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"


def parse_kind(spec):
    """'Deployment.apps/v1' -> ('Deployment', 'apps', 'v1'); 'Service.v1' -> core."""
    kind, _, gv = spec.partition(".")
    group, _, version = gv.rpartition("/")
    if not kind or not version:
        raise SystemExit(f"bad kind {spec!r}: want Kind.group/version or Kind.version")
    return kind, group, version


def find_definition(defs, kind, group, version):
    for name, d in defs.items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            if (gvk.get("kind"), gvk.get("group", ""), gvk.get("version")) == (kind, group, version):
                return name
    raise SystemExit(f"{kind} {group}/{version}: not in the spec")


class Inliner:
    def __init__(self, defs):
        self.defs = defs

    def resolve(self, node, stack=()):
        if isinstance(node, list):
            return [self.resolve(n, stack) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name in stack:
                raise SystemExit(f"recursive definition {name}: not supported")
            if name in (QUANTITY, INT_OR_STRING):
                return {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}]
                        if name == QUANTITY else [{"type": "string"}, {"type": "integer"}]}
            return self.resolve(copy.deepcopy(self.defs[name]), stack + (name,))
        out = {}
        for key, value in node.items():
            if key in ("description", "x-kubernetes-group-version-kind", "x-kubernetes-list-map-keys",
                       "x-kubernetes-list-type", "x-kubernetes-patch-merge-key",
                       "x-kubernetes-patch-strategy", "x-kubernetes-map-type", "x-kubernetes-unions"):
                continue
            if key == "properties":
                out[key] = {k: self.resolve(v, stack) for k, v in value.items()}
            else:
                out[key] = self.resolve(value, stack)
        if out.get("format") == "int-or-string":
            out.pop("format")
            out.pop("type", None)
            out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
        if "properties" in out:
            out.setdefault("type", "object")
            out["additionalProperties"] = False
            required = set(out.get("required", []))
            for name, prop in out["properties"].items():
                if name not in required:
                    out["properties"][name] = nullable(prop)
        return out


def nullable(schema):
    t = schema.get("type")
    if isinstance(t, str):
        schema = dict(schema, type=[t, "null"])
    elif "oneOf" in schema and {"type": "null"} not in schema["oneOf"]:
        schema = dict(schema, oneOf=schema["oneOf"] + [{"type": "null"}])
    return schema


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    spec_path, out_dir, kinds = argv[1], argv[2], argv[3:]
    with open(spec_path, encoding="utf-8") as f:
        defs = json.load(f)["definitions"]
    os.makedirs(out_dir, exist_ok=True)
    inliner = Inliner(defs)
    for spec in kinds:
        kind, group, version = parse_kind(spec)
        name = find_definition(defs, kind, group, version)
        schema = inliner.resolve({"$ref": "#/definitions/" + name})
        api_version = f"{group}/{version}" if group else version
        schema["properties"]["apiVersion"] = {"type": "string", "enum": [api_version]}
        schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
        schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind"})
        schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        schema["description"] = f"{name} from the Kubernetes OpenAPI spec ({os.path.basename(spec_path)}), strict"
        file_name = "-".join(p for p in (kind, group.split(".")[0] if group else "", version) if p).lower()
        path = os.path.join(out_dir, file_name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(schema, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
