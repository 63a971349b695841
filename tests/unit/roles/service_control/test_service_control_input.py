"""Bad input to the service_control role fails with a message that lists the valid values, before anything is touched.

These runs never reach a backend: the systemd and docker backends cannot be exercised on this machine (no systemd,
no Docker engine), so their input validation is all that is tested of them here.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from role_runner import run_role  # noqa: E402  pylint: disable=wrong-import-position

ACTIONS = "restart, start, stop, reload, scale, configure, status"
SECRET = "CANARY-secret-value-91c2"
# Nothing must be touched: point the lab backend at a directory that does not exist.
NOWHERE = {"sqlsynth_lab_root": "/nonexistent/sqlsynth-lab"}


def failed_with(result, *texts):
    assert result.returncode != 0, result.output
    assert "Traceback" not in result.output, result.output
    for text in texts:
        assert text in result.output, result.output[-3000:]
    assert result.result is None


@pytest.mark.parametrize("role_vars, expected", [
    ({"service_control_action": "bounce"}, ACTIONS),
    ({"service_control_component": "queue"}, "app, database, cache, proxy"),
    ({"service_control_backend": "nomad"}, "lab, kubernetes, systemd, docker"),
], ids=["action", "component", "backend"])
def test_unknown_value_lists_the_valid_ones(tmp_path, role_vars, expected):
    failed_with(run_role(tmp_path, role_vars, NOWHERE), expected)


def test_scale_without_replicas(tmp_path):
    failed_with(run_role(tmp_path, {"service_control_action": "scale"}, NOWHERE),
                "Action scale needs service_control_replicas, a whole number >= 0")


def test_scale_with_negative_replicas(tmp_path):
    failed_with(run_role(tmp_path, {"service_control_action": "scale", "service_control_replicas": -1}, NOWHERE),
                "Action scale needs service_control_replicas, a whole number >= 0 (got '-1')")


def test_configure_without_settings(tmp_path):
    failed_with(run_role(tmp_path, {"service_control_action": "configure"}, NOWHERE),
                "Action configure needs service_control_settings, a non-empty mapping of KEY -> value")


def test_configure_with_bad_keys_and_values_names_keys_never_values(tmp_path):
    settings = {"BAD KEY": "x", "QUERY_AGENT_API_KEY": SECRET + "\nINJECTED=1", "OK_KEY": "fine"}
    result = run_role(tmp_path, {"service_control_action": "configure", "service_control_settings": settings}, NOWHERE, "-v")
    failed_with(result, "Invalid keys: BAD KEY", "Keys with an invalid value (not shown): QUERY_AGENT_API_KEY")
    assert SECRET not in result.output


@pytest.mark.parametrize("backend, component, action, supported", [
    ("systemd", "app", "scale", "restart, start, stop, reload, configure, status"),
    ("docker", "app", "reload", "restart, start, stop, scale, configure, status"),
    ("kubernetes", "app", "stop", "restart, scale, configure, status"),
    ("lab", "cache", "reload", "restart, start, stop, status"),
    ("lab", "database", "configure", "restart, start, stop, reload, status"),
])
def test_action_the_backend_does_not_offer(tmp_path, backend, component, action, supported):
    result = run_role(tmp_path, {"service_control_action": action, "service_control_component": component,
                                 "service_control_backend": backend, "service_control_replicas": 2,
                                 "service_control_settings": {"K": "v"}}, NOWHERE)
    failed_with(result, "Action '%s' is not supported for component '%s' on backend '%s'. Supported there: %s."
                % (action, component, backend, supported))


def test_docker_configure_needs_the_compose_project(tmp_path):
    result = run_role(tmp_path, {"service_control_action": "configure", "service_control_backend": "docker",
                                 "service_control_settings": {"QUERY_AGENT_API_KEY": SECRET}}, NOWHERE)
    failed_with(result, "Action configure on the docker backend needs service_control_docker_compose_project")
    assert SECRET not in result.output


def test_kubernetes_proxy_needs_a_deployment_name(tmp_path):
    result = run_role(tmp_path, {"service_control_action": "restart", "service_control_component": "proxy",
                                 "service_control_backend": "kubernetes"}, {"sqlsynth_k8s_host": "http://127.0.0.1:9"})
    failed_with(result, "Component proxy has no workload on Kubernetes: set service_control_k8s_proxy_deployment")
