"""The lab play is idempotent: a second lab_up on a running lab changes nothing."""
from labtools import recap, run_playbook


def test_lab_up_again_reports_changed_zero():
    result = run_playbook("sqlsynth.runbooks.lab_up")
    assert result.returncode == 0, result.stdout[-4000:]
    assert recap(result.stdout)["changed"] == 0, result.stdout[-6000:]
