#!/usr/bin/env python3
"""Renders, installs, upgrades and uninstalls a chart with the Helm v4 engine that PyPI's
helm-python-sdk bundles (no helm binary). `make test` installs the package.

  helm.py render CHART [-f VALUES]... [--set k=v]... [--name N] [--namespace NS] [--kubeconfig K]
  helm.py install|upgrade CHART --name N --namespace NS --kubeconfig K [-f VALUES]... [--set k=v]...
  helm.py uninstall --name N --namespace NS --kubeconfig K

render prints the manifests as one YAML stream, in template order; with --kubeconfig it is an
install dry run on the server (the cluster's API versions, and `lookup` sees the cluster, as
`helm install`), else the defaults of Helm and `lookup` finds nothing (as `helm template`). With
--plain, Helm's own labels and source comments are left out (for config/default)."""

import argparse
import json
import re
import sys

import helm_python as helm


def values(args):
    merged = {}
    for path in args.values or []:
        with open(path) as f:
            deep_merge(merged, helm.values_from_yaml(f.read()) or {})
    for item in args.set or []:
        deep_merge(merged, helm.parse_set_string(item))
    return merged


def deep_merge(into, other):
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = value


def config(args):
    return helm.Config(kubeconfig_path=args.kubeconfig, namespace=args.namespace)


def render(args):
    chart = helm.Chart.load(args.chart)
    vals = values(args)
    chart.validate_schema(vals)
    opts = dict(name=args.name, namespace=args.namespace, is_install=True)
    if args.kubeconfig:
        # An install dry run on the server: the cluster's own capabilities (API versions,
        # Kubernetes version) and `lookup`, exactly as `helm install` renders.
        release = config(args).install(chart, args.name, vals, namespace=args.namespace, dry_run="server")
        print(release["manifest"].strip())
        return
    manifests = chart.render(vals, **opts)
    for path in sorted(manifests):
        body = manifests[path].strip()
        if not body or path.endswith("NOTES.txt") or not any(
            line.strip() and not line.startswith("#") for line in body.splitlines()
        ):
            continue
        if args.plain:
            body = HELM_LINES.sub("", body)
            print(body if body.startswith("---") else f"---\n{body}")
        else:
            print(f"---\n# Source: {path}\n{body}")


# Labels only Helm-managed objects carry.
HELM_LINES = re.compile(r"(?m)^\s*(helm\.sh/chart: .*|app\.kubernetes\.io/managed-by: Helm)\n")


def install(args, upgrade=False):
    chart = helm.Chart.load(args.chart)
    action = config(args).upgrade if upgrade else config(args).install
    release = action(chart, args.name, values(args), namespace=args.namespace)
    print(json.dumps({"name": args.name, "revision": release.get("revision")}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["render", "install", "upgrade", "uninstall"])
    parser.add_argument("chart", nargs="?")
    parser.add_argument("-f", "--values", action="append")
    parser.add_argument("--set", action="append")
    parser.add_argument("--name", default="greenlight")
    parser.add_argument("--namespace", default="greenlight-system")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--plain", action="store_true")
    args = parser.parse_args()
    try:
        if args.command == "render":
            render(args)
        elif args.command == "uninstall":
            config(args).uninstall(args.name)
        else:
            install(args, upgrade=args.command == "upgrade")
    except helm.HelmError as e:
        print(f"helm {args.command}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
