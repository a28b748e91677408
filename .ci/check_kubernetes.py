"""Every object of the Kubernetes manifests against its schema, offline (.ci/kubernetes.sh).

    python .ci/check_kubernetes.py VERSION FILE...

VERSION is the Kubernetes version to check against (e.g. 1.33.0). Each object of each FILE
(multi-document YAML) is checked strictly (unknown fields are errors) against the Kubernetes
schemas kubernetes-validate ships, or, for KEDA's kinds (keda.sh), against
deploy/kubernetes/schemas/keda.sh/<kind>_<version>.json. A kind with no schema is an error, not
a warning. Prints one line per object; exits 1 if any failed.
"""

import json
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
CRD_SCHEMAS = ROOT / "deploy" / "kubernetes" / "schemas"


def crd_schema(obj):
    """The committed JSON schema of a custom resource, or None when it is not one (keda.sh)."""
    group, _, version = obj["apiVersion"].rpartition("/")
    if group != "keda.sh":
        return None
    path = CRD_SCHEMAS / group / f"{obj['kind'].lower()}_{version}.json"
    if not path.exists():
        raise kubernetes_validate.SchemaNotFoundError(obj["kind"], "keda.sh", obj["apiVersion"])
    return json.loads(path.read_text())


def problem(obj, version):
    """Why `obj` fails its schema (a one-line message), or None when it passes."""
    try:
        schema = crd_schema(obj)
        if schema is None:
            kubernetes_validate.validate(obj, version, strict=True)
        else:
            jsonschema.Draft7Validator(schema).validate(obj)
    except jsonschema.ValidationError as error:
        where = ".".join(str(part) for part in error.absolute_path) or "(top)"
        return f"{where}: {error.message}"
    except kubernetes_validate.SchemaNotFoundError as error:
        return f"no schema: {error.message}"
    return None


def main(version, files):
    failed = 0
    for name in files:
        for obj in yaml.safe_load_all(Path(name).read_text()):
            if not obj:
                continue
            label = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
            reason = problem(obj, version)
            if reason:
                failed += 1
                print(f"FAIL {name}: {label}: {reason}")
            else:
                print(f"ok   {name}: {label}")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
