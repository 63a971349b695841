"""health_check against the real lab: healthy, check mode, and each broken component."""
import pytest

from conftest import wait_healthy
from labtools import assert_no_traceback, injected, recap, run_playbook

PLAYBOOK = "sqlsynth.runbooks.health_check"


def test_healthy_lab_prints_healthy_with_table_and_changes_nothing():
    result = run_playbook(PLAYBOOK)
    assert result.returncode == 0, result.stdout[-4000:]
    out = result.stdout
    assert "verdict: healthy" in out
    for signal in ("health ", "tls ", "synthetic_query", "postgres", "redis", "metrics"):
        assert signal in out, "signal %r missing from the table" % signal
    assert recap(out)["changed"] == 0
    assert recap(out)["failed"] == 0


def test_check_mode_runs_the_same_read_only_checks():
    result = run_playbook(PLAYBOOK, check=True)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "verdict: healthy" in result.stdout
    assert recap(result.stdout)["changed"] == 0


FAULTS = [
    # (lab fault, component the verdict must name first, text the failure message must carry)
    ("db_down", "database", "postgres"),
    ("redis_down", "cache", "redis"),
    ("error_burst", "app", "500"),
    ("hang", "app", "timed out"),
    ("expired_cert", "tls", "expired"),
]


@pytest.mark.parametrize("fault,component,evidence", FAULTS, ids=[f[0] for f in FAULTS])
def test_broken_component_is_named_and_run_fails_without_traceback(fault, component, evidence):
    with injected(fault):
        result = run_playbook(PLAYBOOK)
    out = result.stdout
    assert result.returncode != 0, "health_check passed with %s injected:\n%s" % (fault, out[-3000:])
    assert_no_traceback(out)
    assert "broken: %s" % component in out, out[-4000:]
    assert evidence in out.lower() or evidence in out
    # The lab is back to healthy once the fault is off (nothing was left broken).
    body = wait_healthy()
    assert '"healthy"' in body and '"unhealthy"' not in body, "lab not healthy after %s off: %s" % (fault, body)


def test_unknown_option_type_is_a_clear_error():
    result = run_playbook(PLAYBOOK, extra={"health_check_metrics_window": "soon"})
    assert result.returncode != 0
    assert_no_traceback(result.stdout)
    assert "health_check_metrics_window" in result.stdout
