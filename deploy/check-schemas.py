#!/usr/bin/env python3
"""`make check-deploy`: every manifest `make oci` renders, checked against the
schema a cluster would enforce.

- A custom resource (Istio `WasmPlugin`, Envoy Gateway `EnvoyExtensionPolicy`
  and `EnvoyProxy`) against the `openAPIV3Schema` of the CRD version its
  `apiVersion` names, from the CRDs in the schemas directory (default
  `../shared/schemas` beside the repository), with the `jsonschema` package;
  its `metadata` against Kubernetes' `ObjectMeta`.
- A core kind (Deployment, Service, ConfigMap, ...) with `kubernetes-validate`
  (its schemas ship in the package: no network) for Kubernetes K8S_VERSION.

Both strict, as `kubectl apply` is (server-side field validation `Strict`,
kubectl's default): a field the schema does not name is an error, not
dropped. A CRD's CEL rules (`x-kubernetes-validations`) are not evaluated.

Usage: check-schemas.py [--schemas DIR] [--kubernetes-version V] [PATH ...]
(default PATH: target/oci/deploy). Prints how many documents of each kind it
validated; exits 1 on any invalid document, on a kind it has no schema for,
or when it validated none, and 2 when the schemas directory is missing.
"""

import argparse
import collections
import copy
import importlib.resources
import json
import re
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parent.parent
# The oldest Kubernetes the Deployment runs on: its image volume is on by
# default from 1.35 (deploy/README.md). A field newer than that fails here.
K8S_VERSION = "1.35"
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def strict(schema):
    """The schema with `additionalProperties: false` on every object that
    names its properties and neither sets additionalProperties nor keeps
    unknown fields (`x-kubernetes-preserve-unknown-fields`): what the API
    server's strict field validation rejects."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def load_crds(schemas):
    """(group/version, kind) -> a validator for that version's schema."""
    crds = {}
    for path in sorted(schemas.glob("*.yaml")):
        with path.open() as f:
            for doc in yaml.load_all(f, Loader=Loader):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec["versions"]:
                    schema = version.get("schema", {}).get("openAPIV3Schema")
                    if schema is None or not version.get("served", True):
                        continue
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    schema = strict(schema)
                    # Every object has these, named in its schema or not
                    # (Istio's names only spec and status).
                    for field, type_ in (("apiVersion", "string"), ("kind", "string"), ("metadata", "object")):
                        schema["properties"].setdefault(field, {"type": type_})
                    # OpenAPI 3.0 schema objects are JSON Schema draft 4's
                    # vocabulary (x-kubernetes-* and nullable are extensions).
                    crds[key] = (jsonschema.Draft4Validator(schema), path.name)
    return crds


def object_meta(version):
    """A validator for Kubernetes' ObjectMeta (strict) of `version`."""
    base = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    major_minor = ".".join(version.lstrip("v").split(".")[:2])
    with (base / f"v{major_minor}.0-local-strict" / "_definitions.json").open() as f:
        definitions = Resource.from_contents(json.load(f))
    ref = {"$ref": f"{definitions.id()}#/$defs/{OBJECT_META}"}
    return jsonschema.Draft202012Validator(ref, registry=definitions @ Registry())


def where(error, prefix=""):
    return ".".join([prefix] * bool(prefix) + [str(p) for p in error.absolute_path]) or "(top)"


def errors_of(validator, doc):
    return sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))


def check(doc, crds, meta, k8s_version):
    """The problems of one document (empty: valid) and what it was checked
    against."""
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api, str) or not isinstance(kind, str):
        return ["no apiVersion or kind"], "nothing"
    problems = []
    # The API server's rule for object names (not in the schemas).
    for field in ("name", "namespace"):
        value = (doc.get("metadata") or {}).get(field)
        if isinstance(value, str) and not (len(value) <= 253 and DNS_SUBDOMAIN.fullmatch(value)):
            problems.append(f"metadata.{field}: not a DNS subdomain (a-z, 0-9, '-', '.')")
    if (api, kind) in crds:
        validator, against = crds[(api, kind)]
        problems += [f"{where(e)}: {e.message}" for e in errors_of(validator, doc)]
        metadata = copy.deepcopy(doc.get("metadata", {}))
        problems += [f"{where(e, 'metadata')}: {e.message}" for e in errors_of(meta, metadata)]
        return problems, against
    group = api.rpartition("/")[0]
    if group and any(a.rpartition("/")[0] == group for a, _ in crds):
        return problems + [f"the schemas directory has no CRD {kind} of version {api}"], "nothing"
    against = f"Kubernetes {k8s_version}"
    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        problems.append(f"{where(e)}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError as e:
        return problems + [e.message], "nothing"
    return problems, against


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schemas", type=Path, default=ROOT.parent / "shared" / "schemas")
    parser.add_argument("--kubernetes-version", default=K8S_VERSION)
    parser.add_argument("paths", nargs="*", type=Path, default=[ROOT / "target/oci/deploy"])
    args = parser.parse_args()

    if not args.schemas.is_dir():
        print(f"check-schemas: no schemas directory {args.schemas} (--schemas)", file=sys.stderr)
        return 2
    crds = load_crds(args.schemas)
    if not crds:
        print(f"check-schemas: no CRD with a schema in {args.schemas}", file=sys.stderr)
        return 2
    meta = object_meta(args.kubernetes_version)

    files = []
    for path in args.paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        elif path.is_file():
            files.append(path)
        else:
            print(f"check-schemas: {path} does not exist (run `make oci` first)", file=sys.stderr)
            return 1

    counts = collections.Counter()
    invalid = 0
    for file in files:
        with file.open() as f:
            try:
                docs = [d for d in yaml.load_all(f, Loader=Loader) if d is not None]
            except yaml.YAMLError as e:
                print(f"INVALID {file}: not YAML: {e}", file=sys.stderr)
                invalid += 1
                continue
        for i, doc in enumerate(docs):
            name = f"{file} #{i + 1}"
            if not isinstance(doc, dict):
                print(f"INVALID {name}: not a mapping", file=sys.stderr)
                invalid += 1
                continue
            problems, against = check(doc, crds, meta, args.kubernetes_version)
            label = f"{doc.get('kind')} ({doc.get('apiVersion')})"
            if problems:
                invalid += 1
                for p in problems:
                    print(f"INVALID {name} {label} against {against}: {p}", file=sys.stderr)
            else:
                counts[f"{label} against {against}"] += 1

    for label, n in sorted(counts.items()):
        print(f"check-schemas: {n} valid {label}")
    total = sum(counts.values())
    print(f"check-schemas: {total} valid, {invalid} invalid, in {len(files)} files")
    if invalid:
        return 1
    if total == 0:
        print("check-schemas: validated no document", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
