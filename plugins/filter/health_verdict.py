# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
name: health_verdict
short_description: Combine health check results into one verdict
version_added: 0.1.0
author: sqlsynth.runbooks contributors (@sqlsynth)
description:
  - Judges each health signal (the /health endpoint through the proxy and directly, the
    synthetic query, the served certificate, PostgreSQL, Redis, error ratio and latency
    from /metrics) and combines them into C(healthy), C(degraded) or C(unhealthy).
  - Names the broken components, most fundamental first, and lists the signals that
    disagree with each other.
options:
  _input:
    description:
      - A dict with any of the keys C(probes) (M(sqlsynth.runbooks.http_probe_info) result with
        probes named C(health), C(health_direct), C(synthetic_query)), C(metrics) and C(alerts)
        (M(sqlsynth.runbooks.metrics_info) results), C(postgres)
        (M(sqlsynth.runbooks.postgres_health_info)) and C(redis) (M(sqlsynth.runbooks.redis_health_info)).
    type: dict
    required: true
  min_cert_days:
    description: Fewer days left on the served certificate than this fails the C(tls) signal.
    type: int
    default: 14
"""

EXAMPLES = r"""
- name: Combine the checks
  ansible.builtin.set_fact:
    verdict: "{{ {'probes': probes, 'postgres': pg, 'redis': redis} | sqlsynth.runbooks.health_verdict }}"
"""

RETURN = r"""
_value:
  description: The verdict.
  type: dict
  contains:
    verdict:
      description: C(healthy), C(degraded), C(unhealthy) or C(unknown) when no signal was given.
      type: str
    broken:
      description: Failing components (database, cache, tls, proxy, app, api, metrics), likeliest root cause first.
      type: list
      elements: str
    primary:
      description: The first broken component, or null.
      type: str
    signals:
      description: One entry per signal with C(name), C(component), C(ok), C(detail), C(source).
      type: list
      elements: dict
    disagreements:
      description: Human-readable statements of signals that contradict each other.
      type: list
      elements: str
    firing_alerts:
      description: Names of alerts firing in Prometheus.
      type: list
      elements: str
    table:
      description: The signals as aligned text lines.
      type: list
      elements: str
    summary:
      description: "One line, for example C(verdict: unhealthy - broken: database, api)."
      type: str
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.sqlsynth.runbooks.plugins.plugin_utils._verdict import health_verdict


def _health_verdict(results, min_cert_days=14):
    try:
        return health_verdict(results, min_cert_days=int(min_cert_days))
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError("health_verdict: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"health_verdict": _health_verdict}
