"""The built tarball installs into an empty collections path and its FQCN playbook runs."""
import glob
import os
import subprocess

from labtools import ENV, ROOT, VENV_BIN, recap


def test_tarball_installs_and_health_check_runs_by_fqcn(tmp_path):
    galaxy = os.path.join(VENV_BIN, "ansible-galaxy")
    subprocess.run([galaxy, "collection", "build", ROOT, "--output-path", str(tmp_path)], check=True,
                   capture_output=True, env=ENV)
    tarball = glob.glob(str(tmp_path / "sqlsynth-runbooks-*.tar.gz"))
    assert len(tarball) == 1
    target = tmp_path / "collections"
    subprocess.run([galaxy, "collection", "install", tarball[0], "-p", str(target), "--no-deps", "--force"], check=True,
                   capture_output=True, env=ENV)
    installed = target / "ansible_collections" / "sqlsynth" / "runbooks"
    assert (installed / "playbooks" / "health_check.yml").is_file()
    assert not (installed / ".venv").exists() and not (installed / "bench").exists()
    env = dict(ENV, ANSIBLE_COLLECTIONS_PATH=str(target))
    result = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "sqlsynth.runbooks.health_check",
                             "-i", os.path.join(ROOT, "inventories", "lab")], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "verdict: healthy" in result.stdout
    assert recap(result.stdout)["failed"] == 0
