# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
name: incident_plan
short_description: Ordered remediation plan for an incident, from its diagnostics, by the service's runbook
version_added: 0.1.0
author: sqlsynth.runbooks contributors (@sqlsynth)
description:
  - Applies the remedies the service's incident runbook prescribes to the diagnostics of
    M(sqlsynth.runbooks.incident_diagnostics_info) and returns the plan, first item first. It decides
    only; the C(incident) role carries the plan out. An empty list means nothing to fix.
  - B(high_error_rate) - PostgreSQL unreachable gives C(start_database); sessions idle in transaction
    for O(settings.idle_in_transaction_seconds) or longer give C(terminate_idle_sessions); Redis unreachable
    or the cache reported down while the app uses Redis gives C(cache_to_memory); C(flush_cache) only when
    O(settings.cache_corrupted) says so (no diagnostic can tell a corrupted cache). When none of those
    causes is found but the error ratio is above O(settings.error_ratio_max), C(/health) fails, the
    synthetic query fails or the verdict names C(app) or C(api) broken, C(restart_app). A 1-minute load
    per CPU above O(settings.load_per_cpu_max) adds C(scale_out) when something fails. The error ratio
    does not count refused SQL-injection attempts (C(errors_by_type.sql_injection_attempt)); the app
    refusing them is the app working, and the C(security) runbook deals with them.
  - B(db_connection) - C(start_database) and C(terminate_idle_sessions) as above; connections at or above
    O(settings.connections_near_max_ratio) of C(max_connections), or pool timeouts in the app's recent
    errors or in the problems, give C(raise_pool_size) (O(settings.pool_size), O(settings.max_overflow)).
  - B(security) - when a client made O(settings.offender_min_attempts) injection attempts or more (or that
    many were made in all) - C(block_clients) for those clients, except C(127.0.0.1), C(::1), addresses in
    O(settings.never_block) and anything that is not an IP address, which are listed in a C(report) item
    instead; C(rotate_api_key) when such a client had no authentication failures (its injection attempts
    came with a valid API key); C(lower_rate_limit) to O(settings.rate_limit_per_minute); C(harden) with
    O(settings.harden).
  - B(performance) - when p95 is above O(settings.p95_max_seconds) - blocked sessions give a C(report) item
    naming the blocking pids (no automatic remedy); else Redis unreachable while the app uses it gives
    C(cache_to_memory); else high load gives C(scale_out); else C(restart_app).
  - Each item is C(destructive) when it loses data or cuts someone off (C(terminate_idle_sessions),
    C(flush_cache), C(block_clients), C(rotate_api_key), C(restart_app)); C(start_database) is not (it loses
    nothing). It is C(undoable) when the role can put the previous state back (the settings changes
    C(raise_pool_size), C(cache_to_memory), C(lower_rate_limit), C(harden), C(scale_out), and
    C(block_clients)); terminated sessions, a flushed cache, a restart and a leaked API key cannot be
    brought back, and a started database is not to be stopped again.
  - Actions whose gate is false stay in the plan with C(allowed=false) and C(blocked_by) naming the gate,
    so they can be reported. The pseudo-action C(report) is never allowed.
  - An unknown runbook, diagnostics that are not a mapping, malformed sections, bad settings, an unknown
    action in the gates or a gate that is not a boolean raise a clear error.
options:
  _input:
    description: The C(diagnostics) returned by M(sqlsynth.runbooks.incident_diagnostics_info).
    type: dict
    required: true
  runbook:
    description: The incident runbook.
    type: str
    required: true
    choices: [high_error_rate, db_connection, security, performance]
  verdict:
    description: The C(verify) role's C(verify_verdict); its C(broken) components (C(app), C(api), C(cache)) count as
      failures too. Optional.
    type: dict
  settings:
    description:
      - Thresholds and remedy values (C(incident_settings)); keys not given take their defaults, unknown keys are
        ignored (the role may keep more there).
    type: dict
    default: {}
    suboptions:
      error_ratio_max:
        description: Error ratio (0 to 1) above which errors are high (the C(HighErrorRate) alert's 10%).
        type: float
        default: 0.1
      p95_max_seconds:
        description: p95 latency above which the service is slow (the C(HighResponseTime) alert's 100 ms).
        type: float
        default: 0.1
      idle_in_transaction_seconds:
        description: Sessions idle in transaction this long or longer are terminated.
        type: float
        default: 300
      connections_near_max_ratio:
        description: Connections at or above this share of C(max_connections) are near the maximum.
        type: float
        default: 0.8
      pool_size:
        description: New C(QUERY_AGENT_DB_POOL_SIZE) of C(raise_pool_size).
        type: int
        default: 20
      max_overflow:
        description: New C(QUERY_AGENT_DB_MAX_OVERFLOW) of C(raise_pool_size).
        type: int
        default: 40
      offender_min_attempts:
        description: Injection attempts (per client, or in all) that make a security incident.
        type: int
        default: 5
      never_block:
        description: Addresses or networks never blocked, besides C(127.0.0.1) and C(::1) which never are.
        type: list
        elements: str
        default: []
      rate_limit_per_minute:
        description: The rate limit of C(lower_rate_limit).
        type: int
        default: 10
      harden:
        description: The settings (C(overrides.env) keys and values as written there) of C(harden).
        type: dict
        default: {QUERY_AGENT_ENABLE_HSTS: 'true', QUERY_AGENT_CSRF_ENABLED: 'true', QUERY_AGENT_MAX_REQUEST_SIZE_MB: '0.5'}
      load_per_cpu_max:
        description: A 1-minute load per CPU above this is load worth scaling out for.
        type: float
        default: 1.0
      replicas:
        description: Replicas of C(scale_out).
        type: int
        default: 5
      cache_backend:
        description: The cache backend the app is configured with; C(cache_to_memory) is planned only for C(redis).
        type: str
        default: redis
        choices: [memory, redis, memcached]
      cache_corrupted:
        description: The operator judges the Redis cache corrupted; C(high_error_rate) then plans C(flush_cache).
        type: bool
        default: false
  gates:
    description:
      - Action name to boolean (C(incident_gates)). Actions not named take their default, which allows
        everything except C(scale_out) and C(flush_cache).
    type: dict
"""

EXAMPLES = r"""
- name: Plan the remedies
  ansible.builtin.set_fact:
    incident_plan: >-
      {{ diagnostics | sqlsynth.runbooks.incident_plan('high_error_rate', verdict=verify_verdict,
                                                       settings=incident_settings, gates=incident_gates) }}

- name: Say what will not be done
  ansible.builtin.debug:
    msg: "{{ item.action }} not done ({{ item.blocked_by }}): {{ item.reason }}"
  loop: "{{ incident_plan | rejectattr('allowed') }}"
"""

RETURN = r"""
_value:
  description: The plan, first item first; empty when there is nothing to fix.
  type: list
  elements: dict
  contains:
    action:
      description:
        - One of C(start_database), C(terminate_idle_sessions), C(raise_pool_size), C(cache_to_memory),
          C(flush_cache), C(block_clients), C(rotate_api_key), C(lower_rate_limit), C(harden), C(restart_app),
          C(scale_out), or C(report) (a finding for a person, never allowed).
      type: str
    reason:
      description: Why, with the numbers, for example C(error ratio 34.0% (34 errors in 100 requests over 4 s) > 10%).
      type: str
    destructive:
      description: The action loses data or cuts someone off.
      type: bool
    undoable:
      description: The role can put the previous state back.
      type: bool
    params:
      description:
        - C(terminate_idle_sessions) C({pids, older_than_seconds}); C(raise_pool_size) C({pool_size, max_overflow});
          C(block_clients) C({clients}); C(rotate_api_key) C({bytes}) (32 random bytes, hex);
          C(lower_rate_limit) C({per_minute}); C(harden) C({settings}); C(scale_out) C({replicas});
          C(report) C({clients}) or C({blocked_pids, blocking_pids}); the others C({}).
      type: dict
    allowed:
      description: The role may carry it out (its gate is true; never for C(report)).
      type: bool
    blocked_by:
      description: Why it is not allowed (C(gate incident_gates.scale_out is false)); null when allowed.
      type: str
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.sqlsynth.runbooks.plugins.plugin_utils._incident_plan import PlanError, incident_plan


def _incident_plan(diagnostics, runbook, verdict=None, settings=None, gates=None):
    try:
        return incident_plan(diagnostics, runbook, verdict=verdict, settings=settings, gates=gates)
    except PlanError as exc:
        raise AnsibleFilterError("incident_plan: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"incident_plan": _incident_plan}
