"""A small MOCK of the Kubernetes API server, for the service_control role's kubernetes backend tests.

No Kubernetes API server can run on this machine, so the role's kubernetes.core calls are exercised against
this stand-in. It serves only what those calls use: discovery (/version, /api, /apis, /api/v1, /apis/apps/v1),
GET and PATCH of ConfigMaps, Secrets, Deployments and StatefulSets, and the scale subresource. PATCH applies
a JSON merge patch (strategic merge of maps is the same for the fields the role sends), honours dryRun=All,
bumps metadata.generation when the spec changes and reports the rollout as finished only after `rollout_polls`
further reads, so the role's waiting is exercised. Every request is recorded (method, path, query, headers,
body) for the tests to assert on. Nothing here says whether the role works against a real cluster.

Standalone: python k8s_mock_api.py [port] [token] serves a sample namespace until interrupted.
"""
import base64
import copy
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CORE_RESOURCES = [
    {"name": "configmaps", "singularName": "configmap", "namespaced": True, "kind": "ConfigMap",
     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"], "shortNames": ["cm"]},
    {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
]
APPS_RESOURCES = [
    {"name": "deployments", "singularName": "deployment", "namespaced": True, "kind": "Deployment",
     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"], "shortNames": ["deploy"]},
    {"name": "deployments/scale", "singularName": "", "namespaced": True, "group": "autoscaling", "version": "v1",
     "kind": "Scale", "verbs": ["get", "patch", "update"]},
    {"name": "statefulsets", "singularName": "statefulset", "namespaced": True, "kind": "StatefulSet",
     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"], "shortNames": ["sts"]},
    {"name": "statefulsets/scale", "singularName": "", "namespaced": True, "group": "autoscaling", "version": "v1",
     "kind": "Scale", "verbs": ["get", "patch", "update"]},
]
DISCOVERY = {
    "/version": {"major": "1", "minor": "30", "gitVersion": "v1.30.0-mock", "platform": "linux/amd64"},
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": CORE_RESOURCES},
    "/apis/apps/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": APPS_RESOURCES},
}
KINDS = {"configmaps": ("v1", "ConfigMap"), "secrets": ("v1", "Secret"),
         "deployments": ("apps/v1", "Deployment"), "statefulsets": ("apps/v1", "StatefulSet")}
WORKLOADS = ("deployments", "statefulsets")


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch: maps merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def workload(kind, namespace, name, replicas, image="registry.example/sql-synthesizer:1.0"):
    obj = {"apiVersion": "apps/v1", "kind": kind,
           "metadata": {"name": name, "namespace": namespace, "generation": 1, "labels": {"app": name},
                        "resourceVersion": "1", "uid": "mock-%s" % name},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": name, "image": image}]}}}}
    if kind == "StatefulSet":
        obj["spec"]["updateStrategy"] = {"type": "RollingUpdate"}
        obj["spec"]["serviceName"] = name
    return obj


def sample_objects(namespace="production", secrets=None, config=None):
    """The service's documented Kubernetes shape (service.md): one Deployment, two StatefulSets, ConfigMap, Secret."""
    secrets = secrets if secrets is not None else {"QUERY_AGENT_API_KEY": "old-api-key", "DATABASE_URL": "postgresql://x"}
    config = config if config is not None else {"QUERY_AGENT_RATE_LIMIT_PER_MINUTE": "60", "QUERY_AGENT_CACHE_BACKEND": "redis"}
    return [
        workload("Deployment", namespace, "sql-synthesizer", 3),
        workload("StatefulSet", namespace, "sql-synthesizer-db", 1),
        workload("StatefulSet", namespace, "sql-synthesizer-cache", 1),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sql-synthesizer-config", "namespace": namespace,
                                                               "resourceVersion": "1"}, "data": dict(config)},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": "sql-synthesizer-secrets", "namespace": namespace, "resourceVersion": "1"},
         "data": {k: base64.b64encode(v.encode()).decode() for k, v in secrets.items()}},
    ]


class MockState:
    """Objects by (plural, namespace, name), the request log, and pending rollouts."""

    def __init__(self, objects, token=None, rollout_polls=1):
        self.lock = threading.Lock()
        self.token = token
        self.rollout_polls = rollout_polls
        self.requests = []
        self.objects = {}
        self.lagging = {}
        for obj in objects:
            plural = [p for p, (dummy, kind) in KINDS.items() if kind == obj["kind"]][0]
            self.objects[(plural, obj["metadata"]["namespace"], obj["metadata"]["name"])] = copy.deepcopy(obj)

    def get(self, plural, namespace, name):
        return copy.deepcopy(self.objects.get((plural, namespace, name)))

    def with_status(self, plural, key, obj):
        """A workload as a controller would report it: finished, unless its rollout is still pending."""
        if plural not in WORKLOADS:
            return obj
        generation = obj["metadata"].get("generation", 1)
        replicas = obj["spec"].get("replicas", 1)
        pending = self.lagging.get(key, 0)
        if pending:
            self.lagging[key] = pending - 1
        status = {"observedGeneration": generation - 1 if pending else generation, "replicas": replicas,
                  "readyReplicas": replicas, "availableReplicas": replicas, "updatedReplicas": 0 if pending else replicas,
                  "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                                 {"type": "Progressing", "status": "True",
                                  "reason": "ReplicaSetUpdated" if pending else "NewReplicaSetAvailable"}]}
        if plural == "statefulsets":
            status.update(currentReplicas=replicas, currentRevision="rev-%d" % generation,
                          updateRevision="rev-%d" % generation)
        obj["status"] = status
        return obj


def _status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class Handler(BaseHTTPRequestHandler):
    state = None  # set by make_server
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass

    def _send(self, code, payload):
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self, body):
        url = urlsplit(self.path)
        entry = {"method": self.command, "path": url.path, "query": parse_qs(url.query),
                 "authorization": self.headers.get("Authorization"), "content_type": self.headers.get("Content-Type"),
                 "body": body}
        with self.state.lock:
            self.state.requests.append(entry)
        return url

    def _authorized(self):
        if self.state.token and self.headers.get("Authorization") != "Bearer " + self.state.token:
            self._send(401, _status(401, "Unauthorized", "Unauthorized"))
            return False
        return True

    def _route(self, path):
        parts = path.strip("/").split("/")
        # api/v1/namespaces/NS/PLURAL/NAME[/scale]  or  apis/apps/v1/namespaces/NS/PLURAL/NAME[/scale]
        if parts[:2] == ["api", "v1"]:
            rest = parts[2:]
        elif parts[:3] == ["apis", "apps", "v1"]:
            rest = parts[3:]
        else:
            return None
        if len(rest) in (4, 5) and rest[0] == "namespaces" and rest[2] in KINDS:
            sub = rest[4] if len(rest) == 5 else None
            if sub not in (None, "scale") or (sub == "scale" and rest[2] not in WORKLOADS):
                return None
            return rest[2], rest[1], rest[3], sub
        return None

    def do_GET(self):  # noqa: N802
        url = self._record(None)
        if not self._authorized():
            return
        if url.path in DISCOVERY:
            self._send(200, DISCOVERY[url.path])
            return
        route = self._route(url.path)
        if route is None:
            self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
            return
        plural, namespace, name, sub = route
        with self.state.lock:
            obj = self.state.get(plural, namespace, name)
            if obj is None:
                self._send(404, _status(404, "NotFound", '%s "%s" not found' % (plural, name)))
                return
            obj = self.state.with_status(plural, (plural, namespace, name), obj)
        self._send(200, self._scale(obj) if sub == "scale" else obj)

    @staticmethod
    def _scale(obj):
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"]},
                "spec": {"replicas": obj["spec"].get("replicas", 1)},
                "status": {"replicas": obj.get("status", {}).get("replicas", obj["spec"].get("replicas", 1))}}

    def do_PATCH(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        url = self._record(body)
        if not self._authorized():
            return
        if not isinstance(body, dict):
            self._send(400, _status(400, "BadRequest", "patch body is not a JSON object"))
            return
        route = self._route(url.path)
        if route is None:
            self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
            return
        plural, namespace, name, sub = route
        dry_run = "All" in parse_qs(url.query).get("dryRun", [])
        key = (plural, namespace, name)
        with self.state.lock:
            obj = self.state.get(plural, namespace, name)
            if obj is None:
                self._send(404, _status(404, "NotFound", '%s "%s" not found' % (plural, name)))
                return
            if sub == "scale":
                body = {"spec": {"replicas": body.get("spec", {}).get("replicas")}}
            patched = merge_patch(obj, {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "status")})
            if plural in WORKLOADS and patched.get("spec") != obj.get("spec"):
                patched["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            if patched != obj:
                patched["metadata"]["resourceVersion"] = str(int(obj["metadata"].get("resourceVersion", "1")) + 1)
            if not dry_run:
                self.state.objects[key] = patched
                if patched["metadata"].get("generation") != obj["metadata"].get("generation"):
                    self.state.lagging[key] = self.state.rollout_polls
            # the response to a PATCH does not consume a pending rollout's reads
            shown = self.state.with_status(plural, ("patch-response",), copy.deepcopy(patched))
        self._send(200, self._scale(shown) if sub == "scale" else shown)


def make_server(host="127.0.0.1", port=0, objects=None, token=None, rollout_polls=1):
    """A ThreadingHTTPServer serving the mock; its .state holds objects and recorded requests."""
    state = MockState(objects if objects is not None else sample_objects(), token=token, rollout_polls=rollout_polls)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.state = state
    return server


if __name__ == "__main__":
    SERVER = make_server(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0, token=sys.argv[2] if len(sys.argv) > 2 else None)
    print("mock Kubernetes API on http://127.0.0.1:%d" % SERVER.server_address[1], flush=True)
    SERVER.serve_forever()
