"""Re-create the vendored CRD schemas from the projects' own CRD files.

Each ``*.schema.json.gz`` here is the ``openAPIV3Schema`` of one CRD version, taken from the
project's generated CRD YAML and trimmed of ``description`` texts (they are most of the
bytes and no validation rule), gzipped (the InferenceService one is 600 KB of JSON, since
every predictor framework embeds a whole container spec). ``sources.json`` names the repository, commit and file.
The test (tests/unit/test_k8s_manifests.py) validates deploy/ against these offline.

Run with the three repositories checked out (any git directory, bare is fine)::

    python tests/data/crds/vendor.py KSERVE_GIT KUBERAY_GIT KEDA_GIT
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
#: (repository, path in it, CRD version, file written here)
CRDS = (
    ("kserve/kserve", "config/crd/full/serving.kserve.io_servingruntimes.yaml", "v1alpha1", "servingruntime"),
    ("kserve/kserve", "config/crd/full/serving.kserve.io_inferenceservices.yaml", "v1beta1", "inferenceservice"),
    ("ray-project/kuberay", "ray-operator/config/crd/bases/ray.io_rayservices.yaml", "v1", "rayservice"),
    ("kedacore/keda", "config/crd/bases/keda.sh_scaledobjects.yaml", "v1alpha1", "scaledobject"),
)


def trimmed(node: Any) -> Any:
    """The schema without its ``description`` texts (a property *named* description stays)."""
    if isinstance(node, dict):
        return {key: (trimmed_properties(value) if key == "properties" else trimmed(value))
                for key, value in node.items() if key != "description"}
    if isinstance(node, list):
        return [trimmed(item) for item in node]
    return node


def trimmed_properties(properties: dict[str, Any]) -> dict[str, Any]:
    return {name: trimmed(schema) for name, schema in properties.items()}


def git(repo_dir: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", repo_dir, *args], check=True, capture_output=True, text=True).stdout


def main(argv: list[str]) -> int:
    dirs = dict(zip(("kserve/kserve", "ray-project/kuberay", "kedacore/keda"), argv))
    sources = {}
    for repo, path, version, name in CRDS:
        commit = git(dirs[repo], "rev-parse", "HEAD").strip()
        described = git(dirs[repo], "describe", "--tags").strip()
        crd = yaml.safe_load(git(dirs[repo], "show", f"{commit}:{path}"))
        (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
        schema = trimmed(entry["schema"]["openAPIV3Schema"])
        text = json.dumps(schema, separators=(",", ":"), sort_keys=True) + "\n"
        (HERE / f"{name}.schema.json.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
        sources[name] = {"repository": f"https://github.com/{repo}", "commit": commit, "describe": described,
                         "path": path, "group": crd["spec"]["group"], "kind": crd["spec"]["names"]["kind"],
                         "version": version}
    (HERE / "sources.json").write_text(json.dumps(sources, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
