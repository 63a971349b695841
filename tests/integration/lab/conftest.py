"""Integration tests against the real local lab (brought up by `make lab-up`)."""
import os
import subprocess
import time

import pytest

from labtools import LAB_ROOT, ROOT, lab_fault, lab_lock

pytestmark = pytest.mark.lab


@pytest.fixture(scope="session", autouse=True)
def lab():
    """Hold the lab lock for the whole session and start from a lab with every fault off."""
    if not os.path.isdir(LAB_ROOT):
        pytest.fail("the lab is not set up: run `make lab-up` first")
    with lab_lock():
        lab_fault("all", "off")
        yield LAB_ROOT
        lab_fault("all", "off")


def curl_health():
    """The lab's /health through nginx with the lab CA, as an operator would check it."""
    return subprocess.run(["curl", "-sS", "--max-time", "5", "--cacert", os.path.join(LAB_ROOT, "ca", "ca.crt"),
                           "--resolve", "sqlsynth.lab:8443:127.0.0.1", "https://sqlsynth.lab:8443/health"],
                          capture_output=True, text=True, check=False, cwd=ROOT)


def wait_healthy(seconds=30):
    """Poll /health through nginx until it says healthy; returns the last body."""
    body = ""
    for _attempt in range(seconds):
        body = curl_health().stdout
        if '"healthy"' in body and '"unhealthy"' not in body:
            return body
        time.sleep(1)
    return body
