#!/usr/bin/env python3
"""Offline check of the Kubernetes manifests in this directory.

Usage: check.py [REPO-ROOT]

Parses every *.yaml here (PyYAML, Debian's python3-yaml) and checks what the
API server would reject or what would silently not work with buntime: the
fields and types of a node.k8s.io/v1 RuntimeClass (DNS-label handler,
overhead quantities) and of a v1 Pod (runtimeClassName naming a RuntimeClass
defined here, containers with names and images, resource quantities), and
that a buntime.dev/policy-name annotation names a shipped policy (or an
inline buntime.dev/policy is JSON). Prints one line per problem and exits 1
if there is any.
"""
import json
import os
import re
import sys

import yaml

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][0-9]+)?$")

here = os.path.dirname(os.path.abspath(__file__))
root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(here))
problems = []


def bad(where, msg):
    problems.append(f"{where}: {msg}")


def want(obj, key, typ, where, required=True):
    if key not in obj:
        if required:
            bad(where, f"missing {key}")
        return None
    if not isinstance(obj[key], typ):
        bad(where, f"{key} should be {typ.__name__ if isinstance(typ, type) else typ}")
        return None
    return obj[key]


def check_quantities(obj, where):
    for k, v in (obj or {}).items():
        if k not in ("cpu", "memory", "ephemeral-storage") and "/" not in k:
            bad(where, f"unknown resource {k}")
        if not isinstance(v, (str, int)) or not QUANTITY.match(str(v)):
            bad(where, f"{k}: {v!r} is not a quantity")


def check_metadata(doc, where):
    meta = want(doc, "metadata", dict, where)
    if meta is None:
        return ""
    name = want(meta, "name", str, where + ".metadata") or ""
    if name and (len(name) > 253 or not DNS_SUBDOMAIN.match(name)):
        bad(where, f"metadata.name {name!r} is not a DNS subdomain")
    for field in ("labels", "annotations"):
        m = want(meta, field, dict, where + ".metadata", required=False) or {}
        for k, v in m.items():
            if not isinstance(v, str):
                bad(where, f"metadata.{field}.{k} must be a string, not {type(v).__name__}")
    return name


def check_runtimeclass(doc, where, classes):
    if doc.get("apiVersion") != "node.k8s.io/v1":
        bad(where, "RuntimeClass apiVersion should be node.k8s.io/v1")
    name = check_metadata(doc, where)
    handler = want(doc, "handler", str, where)
    if handler and not DNS_LABEL.match(handler):
        bad(where, f"handler {handler!r} is not a DNS label")
    overhead = want(doc, "overhead", dict, where, required=False)
    if overhead is not None:
        check_quantities(want(overhead, "podFixed", dict, where + ".overhead"), where + ".overhead.podFixed")
    sched = want(doc, "scheduling", dict, where, required=False)
    if sched is not None:
        for k, v in (want(sched, "nodeSelector", dict, where + ".scheduling", required=False) or {}).items():
            if not isinstance(v, str):
                bad(where, f"scheduling.nodeSelector.{k} must be a string")
    for k in doc:
        if k not in ("apiVersion", "kind", "metadata", "handler", "overhead", "scheduling"):
            bad(where, f"unknown field {k}")
    classes[name] = handler


def check_pod(doc, where, classes):
    if doc.get("apiVersion") != "v1":
        bad(where, "Pod apiVersion should be v1")
    check_metadata(doc, where)
    ann = (doc.get("metadata") or {}).get("annotations") or {}
    pname = ann.get("buntime.dev/policy-name")
    if pname is not None and not os.path.isfile(os.path.join(root, "policies", f"{pname}.json")):
        bad(where, f"buntime.dev/policy-name {pname!r}: no policies/{pname}.json")
    if "buntime.dev/policy" in ann:
        try:
            json.loads(ann["buntime.dev/policy"])
        except ValueError as e:
            bad(where, f"buntime.dev/policy is not JSON: {e}")
    spec = want(doc, "spec", dict, where) or {}
    rc = want(spec, "runtimeClassName", str, where + ".spec")
    if rc is not None and rc not in classes:
        bad(where, f"runtimeClassName {rc!r} is not a RuntimeClass defined here")
    containers = want(spec, "containers", list, where + ".spec") or []
    if not containers:
        bad(where, "spec.containers is empty")
    for i, c in enumerate(containers):
        cw = f"{where}.spec.containers[{i}]"
        if not isinstance(c, dict):
            bad(cw, "not an object")
            continue
        n = want(c, "name", str, cw)
        if n and not DNS_LABEL.match(n):
            bad(cw, f"name {n!r} is not a DNS label")
        want(c, "image", str, cw)
        for f in ("command", "args"):
            v = want(c, f, list, cw, required=False) or []
            if not all(isinstance(x, str) for x in v):
                bad(cw, f"{f} must be strings")
        res = want(c, "resources", dict, cw, required=False) or {}
        for f in ("limits", "requests"):
            check_quantities(want(res, f, dict, cw + ".resources", required=False), f"{cw}.resources.{f}")
    rp = spec.get("restartPolicy")
    if rp is not None and rp not in ("Always", "OnFailure", "Never"):
        bad(where, f"restartPolicy {rp!r}")


def main():
    docs = []
    files = sorted(f for f in os.listdir(here) if f.endswith((".yaml", ".yml")))
    if not files:
        bad(here, "no manifests")
    for f in files:
        with open(os.path.join(here, f)) as fh:
            try:
                for i, d in enumerate(yaml.safe_load_all(fh)):
                    if d is not None:
                        docs.append((f"{f}#{i}", d))
            except yaml.YAMLError as e:
                bad(f, f"YAML: {e}")
    classes = {}
    for where, d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            bad(where, "not a Kubernetes object (kind, apiVersion)")
        elif d["kind"] == "RuntimeClass":
            check_runtimeclass(d, where, classes)
    for where, d in docs:
        if isinstance(d, dict) and d.get("kind") == "Pod":
            check_pod(d, where, classes)
        elif isinstance(d, dict) and d.get("kind") not in ("RuntimeClass", "Pod"):
            bad(where, f"unexpected kind {d.get('kind')!r}")
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"ok: {len(docs)} objects in {len(files)} files")


if __name__ == "__main__":
    main()
