"""The service_control role's kubernetes backend against a MOCK Kubernetes API (k8s_mock_api.py).

No API server can run on this machine: these tests check the requests kubernetes.core sends on the role's behalf
(paths, patch bodies and types, dry run in check mode, the bearer token) and what the role reports, against a
stand-in that applies patches like the API server would. They say nothing about behaviour on a live cluster.
"""
import base64
import os
import sys
import threading

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from k8s_mock_api import make_server, sample_objects  # noqa: E402  pylint: disable=wrong-import-position
from role_runner import run_role  # noqa: E402  pylint: disable=wrong-import-position

TOKEN = "CANARY-k8s-bearer-5e0b1d"
OLD_KEY = "CANARY-old-api-key-77aa"
NEW_KEY = "CANARY-new-api-key-0c3f"
DEPLOY = "/apis/apps/v1/namespaces/production/deployments/sql-synthesizer"
DB_STS = "/apis/apps/v1/namespaces/production/statefulsets/sql-synthesizer-db"
CONFIGMAP = "/api/v1/namespaces/production/configmaps/sql-synthesizer-config"
SECRET = "/api/v1/namespaces/production/secrets/sql-synthesizer-secrets"
ANNOTATION = "kubectl.kubernetes.io/restartedAt"


@pytest.fixture
def api():
    server = make_server(objects=sample_objects(secrets={"QUERY_AGENT_API_KEY": OLD_KEY, "DATABASE_URL": "postgresql://db"}),
                         token=TOKEN, rollout_polls=1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def inventory(server):
    return {"sqlsynth_service_backend": "kubernetes", "sqlsynth_k8s_host": "http://127.0.0.1:%d" % server.server_address[1],
            "sqlsynth_k8s_api_key": TOKEN, "service_control_k8s_wait_sleep": 1}


def patches(server, path=None):
    return [r for r in server.state.requests if r["method"] == "PATCH" and (path is None or r["path"] == path)]


def stored(server, plural, name):
    return server.state.get(plural, "production", name)


def secret_value(server, key):
    data = stored(server, "secrets", "sql-synthesizer-secrets")["data"]
    return base64.b64decode(data[key]).decode() if key in data else None


def assert_no_secret(result):
    for canary in (TOKEN, OLD_KEY, NEW_KEY):
        assert canary not in result.output


def test_mocked_restart_patches_the_restart_annotation_and_waits_for_the_rollout(tmp_path, api):
    result = run_role(tmp_path, {"service_control_action": "restart"}, inventory(api))
    assert result.returncode == 0, result.output
    [patch] = patches(api)
    assert patch["path"] == DEPLOY
    assert patch["content_type"] == "application/strategic-merge-patch+json"
    assert set(patch["body"]["spec"]["template"]["metadata"]["annotations"]) == {ANNOTATION}
    assert "dryRun" not in patch["query"]
    deploy = stored(api, "deployments", "sql-synthesizer")
    assert deploy["spec"]["template"]["metadata"]["annotations"][ANNOTATION].endswith("Z")
    assert deploy["metadata"]["generation"] == 2
    # the mock reports the rollout unfinished on the first read after the patch: the role read again until it finished
    reads_after = [r for r in api.state.requests[api.state.requests.index(patch):] if r["method"] == "GET" and r["path"] == DEPLOY]
    assert len(reads_after) >= 2
    assert all(r["authorization"] == "Bearer " + TOKEN for r in api.state.requests)
    res = result.result
    assert (res["action"], res["component"], res["backend"], res["changed"], res["check_mode"]) == (
        "restart", "app", "kubernetes", True, False)
    assert res["previous"]["generation"] == 1 and res["current"]["generation"] == 2
    assert "restarted Deployment production/sql-synthesizer" in res["message"] and "3/3 replicas ready" in res["message"]
    assert_no_secret(result)


def test_mocked_database_restart_patches_its_statefulset(tmp_path, api):
    result = run_role(tmp_path, {"service_control_action": "restart", "service_control_component": "database"}, inventory(api))
    assert result.returncode == 0, result.output
    assert [p["path"] for p in patches(api)] == [DB_STS]
    assert ANNOTATION in stored(api, "statefulsets", "sql-synthesizer-db")["spec"]["template"]["metadata"]["annotations"]
    assert stored(api, "deployments", "sql-synthesizer")["metadata"]["generation"] == 1


def test_mocked_scale_sets_replicas_through_the_scale_subresource(tmp_path, api):
    result = run_role(tmp_path, {"service_control_action": "scale", "service_control_replicas": 5}, inventory(api))
    assert result.returncode == 0, result.output
    [patch] = patches(api)
    assert patch["path"] == DEPLOY + "/scale" and patch["body"]["spec"] == {"replicas": 5}
    assert stored(api, "deployments", "sql-synthesizer")["spec"]["replicas"] == 5
    res = result.result
    assert res["changed"] is True
    assert res["previous"]["replicas"] == 3 and res["current"]["replicas"] == 5
    assert res["message"] == "scaled Deployment production/sql-synthesizer from 3 to 5 replicas, all ready"
    # no ConfigMap or Secret is touched by a scale
    assert not [r for r in api.state.requests if "/configmaps/" in r["path"] or "/secrets/" in r["path"]]

    again = run_role(tmp_path, {"service_control_action": "scale", "service_control_replicas": 5}, inventory(api))
    assert again.returncode == 0, again.output
    assert again.result["changed"] is False and "already has 5 replicas" in again.result["message"]
    assert len(patches(api)) == 1


def test_mocked_configure_patches_configmap_and_secret_restarts_and_rolls_back(tmp_path, api):
    settings = {"QUERY_AGENT_RATE_LIMIT_PER_MINUTE": 10, "QUERY_AGENT_CACHE_BACKEND": None, "QUERY_AGENT_API_KEY": NEW_KEY}
    result = run_role(tmp_path, {"service_control_action": "configure", "service_control_settings": settings}, inventory(api), "-v")
    assert result.returncode == 0, result.output

    cm_patch, secret_patch, restart = patches(api)
    assert cm_patch["path"] == CONFIGMAP and cm_patch["content_type"] == "application/merge-patch+json"
    assert cm_patch["body"]["data"] == {"QUERY_AGENT_RATE_LIMIT_PER_MINUTE": "10", "QUERY_AGENT_CACHE_BACKEND": None}
    assert secret_patch["path"] == SECRET
    assert secret_patch["body"]["data"] == {"QUERY_AGENT_API_KEY": base64.b64encode(NEW_KEY.encode()).decode()}
    assert restart["path"] == DEPLOY and ANNOTATION in restart["body"]["spec"]["template"]["metadata"]["annotations"]

    assert stored(api, "configmaps", "sql-synthesizer-config")["data"] == {"QUERY_AGENT_RATE_LIMIT_PER_MINUTE": "10"}
    assert secret_value(api, "QUERY_AGENT_API_KEY") == NEW_KEY
    assert secret_value(api, "DATABASE_URL") == "postgresql://db"

    res = result.result
    assert res["changed"] is True
    assert res["previous"]["settings"] == {"QUERY_AGENT_RATE_LIMIT_PER_MINUTE": "60", "QUERY_AGENT_CACHE_BACKEND": "redis",
                                           "QUERY_AGENT_API_KEY": OLD_KEY}
    assert "QUERY_AGENT_API_KEY" in res["message"] and "values not shown" in res["message"]
    assert OLD_KEY not in res["message"] and NEW_KEY not in res["message"]
    assert_no_secret(result)

    # a caller rolls back with `previous`
    rollback = run_role(tmp_path, {"service_control_action": "configure", "service_control_settings": res["previous"]["settings"]},
                        inventory(api))
    assert rollback.returncode == 0, rollback.output
    assert stored(api, "configmaps", "sql-synthesizer-config")["data"] == {
        "QUERY_AGENT_RATE_LIMIT_PER_MINUTE": "60", "QUERY_AGENT_CACHE_BACKEND": "redis"}
    assert secret_value(api, "QUERY_AGENT_API_KEY") == OLD_KEY
    assert_no_secret(rollback)


def test_mocked_check_mode_sends_dry_runs_and_changes_nothing(tmp_path, api):
    before = {key: dict(value) for key, value in api.state.objects.items()}
    calls = [{"service_control_action": "restart"},
             {"service_control_action": "scale", "service_control_replicas": 7},
             {"service_control_action": "configure", "service_control_settings": {"QUERY_AGENT_RATE_LIMIT_PER_MINUTE": 10,
                                                                                  "QUERY_AGENT_API_KEY": NEW_KEY}}]
    for call in calls:
        result = run_role(tmp_path, call, inventory(api), "--check")
        assert result.returncode == 0, result.output
        res = result.result
        assert res["check_mode"] is True and res["changed"] is True, res["message"]
        assert res["message"].startswith("check mode: would"), res["message"]
        assert_no_secret(result)
    assert api.state.objects == before
    # restart and configure patches went out as server-side dry runs; k8s_scale only reads in check mode
    assert patches(api) and all(p["query"].get("dryRun") == ["All"] for p in patches(api))
    assert not [p for p in patches(api) if p["path"].endswith("/scale")]


def test_mocked_missing_deployment_fails_clearly(tmp_path, api):
    result = run_role(tmp_path, {"service_control_action": "restart"}, dict(inventory(api), sqlsynth_k8s_deployment="nope"))
    assert result.returncode != 0
    assert "Deployment production/nope not found" in result.output
    assert "Traceback" not in result.output
    assert not patches(api)


def test_mocked_wrong_token_fails_without_showing_it(tmp_path, api):
    result = run_role(tmp_path, {"service_control_action": "status"}, dict(inventory(api), sqlsynth_k8s_api_key=TOKEN + "-wrong"))
    assert result.returncode != 0
    assert "Unauthorized" in result.output or "401" in result.output
    assert TOKEN not in result.output
