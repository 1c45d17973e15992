#!/usr/bin/env python3
"""A fake Kubernetes API server for the example fleet: one "management cluster" with a few
namespaces and pods whose names carry the cluster's name, read-only, over plain HTTP.

    fake_kube_api.py CLUSTER KUBECONFIG [--port PORT] [--log]

Binds 127.0.0.1:PORT (0, the default, picks a free port), then writes KUBECONFIG pointing at
itself, so a kubeconfig that exists means the server is listening. It answers what
kubernetes-mcp-server 0.0.67 asks for (`--log` prints each request): discovery (/api, /apis,
/api/v1, on the first tool call), namespaces and pods (lists as the Table kubectl shows, or as
JSON; single pods) and events (none). kubernetes-mcp-server's `pods_list` lists the kubeconfig's
namespace ("default") unless a SelfSubjectAccessReview allows more, and the fake answers none.
Python standard library only.
"""

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

NAMESPACES = ["default", "kube-system", "monitoring"]


def pods(cluster):
    """The cluster's pods: the same shape on every cluster, names that say which cluster."""
    specs = [
        ("default", f"api-{cluster}-7d9f8b6c5d-x2k4p", "api"),
        ("default", f"worker-{cluster}-5c6b7d8f9-q8r7s", "worker"),
        ("kube-system", f"coredns-{cluster}-6f7c8d9b4-m3n5t", "coredns"),
        ("monitoring", f"prometheus-{cluster}-0", "prometheus"),
    ]
    return [pod(cluster, ns, name, app) for ns, name, app in specs]


def pod(cluster, namespace, name, app):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"{cluster}-{name}",
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": app, "cluster": cluster},
        },
        "spec": {"nodeName": f"{cluster}-node-1", "containers": [{"name": app, "image": f"example/{app}:1.0"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.10",
            "containerStatuses": [{"name": app, "ready": True, "restartCount": 0, "image": f"example/{app}:1.0"}],
        },
    }


def namespace(cluster, name):
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": f"{cluster}-ns-{name}",
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "status": {"phase": "Active"},
    }


def resource(name, kind, namespaced, verbs=("get", "list", "watch")):
    return {"name": name, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": list(verbs)}


API_V1 = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": "v1",
    "resources": [
        resource("namespaces", "Namespace", False),
        resource("pods", "Pod", True),
        resource("pods/log", "Pod", True, ("get",)),
        resource("events", "Event", True),
        resource("nodes", "Node", False),
    ],
}


def table(items):
    """The server-side Table (meta.k8s.io/v1) that `kubectl get` and kubernetes-mcp-server ask for."""
    columns = ["Name", "Namespace", "Status"]
    rows = [
        {
            "cells": [it["metadata"]["name"], it["metadata"].get("namespace", ""), it["status"]["phase"]],
            "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": it["metadata"]},
        }
        for it in items
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "1"},
        "columnDefinitions": [{"name": c, "type": "string", "format": "", "description": c, "priority": 0} for c in columns],
        "rows": rows,
    }


def listing(kind, items):
    return {"apiVersion": "v1", "kind": f"{kind}List", "metadata": {"resourceVersion": "1"}, "items": items}


class Handler(BaseHTTPRequestHandler):
    cluster = ""
    log = False

    def do_GET(self):
        path = urlsplit(self.path).path.rstrip("/")
        if self.log:
            print(f"{self.cluster}: GET {self.path} accept={self.headers.get('Accept')}", file=sys.stderr, flush=True)
        body = self.answer(path.split("/")[1:])
        if body is None:
            self.send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                            "message": f"the fake API of {self.cluster} has no {path}", "code": 404})
        elif body.get("kind", "").endswith("List") and "as=Table" in self.headers.get("Accept", ""):
            kind = body["kind"][: -len("List")]
            self.send(200, table(body["items"]) if kind in ("Pod", "Namespace") else body)
        else:
            self.send(200, body)

    def answer(self, parts):
        """The object at a path, or None."""
        cluster = self.cluster
        all_pods = pods(cluster)
        match parts:
            case ["version"]:
                return {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"}
            case ["api"]:
                return {"kind": "APIVersions", "versions": ["v1"],
                        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
            case ["apis"]:
                return {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
            case ["api", "v1"]:
                return API_V1
            case ["api", "v1", "namespaces"]:
                return listing("Namespace", [namespace(cluster, n) for n in NAMESPACES])
            case ["api", "v1", "namespaces", ns] if ns in NAMESPACES:
                return namespace(cluster, ns)
            case ["api", "v1", "pods"]:
                return listing("Pod", all_pods)
            case ["api", "v1", "namespaces", ns, "pods"] if ns in NAMESPACES:
                return listing("Pod", [p for p in all_pods if p["metadata"]["namespace"] == ns])
            case ["api", "v1", "namespaces", ns, "pods", name]:
                return next((p for p in all_pods if p["metadata"]["namespace"] == ns and p["metadata"]["name"] == name), None)
            case ["api", "v1", "events"] | ["api", "v1", "namespaces", _, "events"]:
                return listing("Event", [])
            case ["api", "v1", "nodes"]:
                return listing("Node", [])
        return None

    def send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    server: http://127.0.0.1:{port}
contexts:
- name: {cluster}
  context:
    cluster: {cluster}
    user: {cluster}
current-context: {cluster}
users:
- name: {cluster}
  user:
    token: fake-token
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cluster")
    parser.add_argument("kubeconfig")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", action="store_true", help="print each request to stderr")
    args = parser.parse_args()
    Handler.cluster, Handler.log = args.cluster, args.log
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    # Written whole, then renamed: a reader never sees half a kubeconfig.
    tmp = f"{args.kubeconfig}.tmp"
    with open(tmp, "w") as f:
        f.write(KUBECONFIG.format(cluster=args.cluster, port=port))
    os.replace(tmp, args.kubeconfig)
    server.serve_forever()


if __name__ == "__main__":
    main()
