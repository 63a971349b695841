# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
name: severity
short_description: Derive the incident severity (P0-P3) from the signals by the severity policy
version_added: 0.1.0
author: sqlsynth.runbooks contributors (@sqlsynth)
description:
  - Applies severity rules to the verdict of the C(verify) role, optional metrics (error ratio, p95 latency)
    and security figures (injection attempts per minute), and looks the most severe matching level up in the
    severity policy (C(sqlsynth_severity_policy)) for its response time, escalation and channels.
  - Every matching rule is listed; the most severe (P0 before P1 ...) decides. When no rule matches the
    severity is C(none) - nothing to respond to.
  - The C(sqlsynth.runbooks.triage) role carries the default rules; see its argument spec for their meaning.
  - A malformed policy, malformed rules, a rule or requested severity the policy does not define, or a
    contact the policy escalates to that is not in O(contacts) raise a clear error.
options:
  _input:
    description:
      - A dict with the keys C(verdict) (the C(verify) role's C(verify_verdict); may be empty when
        verification did not run), C(metrics) (numbers such as C(error_ratio) and C(p95_seconds); a
        M(sqlsynth.runbooks.metrics_info) result works as is), C(security) (numbers or booleans such as
        C(injection_attempts_per_minute) or C(security_incident)), C(runbook) (the runbook name) and
        C(severity) (a level forced by the operator; empty to derive it).
    type: dict
    required: true
  policy:
    description: The severity policy, C(sqlsynth_severity_policy) (levels named C(P0), C(P1) ...).
    type: dict
    required: true
  rules:
    description:
      - The rules, each C(severity), optional C(name) and C(when) with the conditions C(broken_any),
        C(verdict_in), C(metric) with C(above), C(flag), C(runbook_in) (all must hold).
    type: list
    elements: dict
    required: true
  contacts:
    description: C(sqlsynth_contacts); the level's C(escalate_to) keys are resolved against it.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Triage
  ansible.builtin.set_fact:
    triage: >-
      {{ {'verdict': verify_verdict, 'metrics': {'error_ratio': 0.23}, 'runbook': 'incident_high_error_rate'}
         | sqlsynth.runbooks.severity(sqlsynth_severity_policy, triage_default_rules, contacts=sqlsynth_contacts) }}
"""

RETURN = r"""
_value:
  description: The triage.
  type: dict
  contains:
    severity:
      description: The level (C(P0) ...), or C(none) when no rule matched.
      type: str
    name:
      description: The level's name from the policy (C(Critical) ...).
      type: str
    reason:
      description: The deciding rule with its numbers, for example C(error ratio 23% above 10%).
      type: str
    matched:
      description: Every matching rule as C(<severity> <reason>).
      type: list
      elements: str
    response_time:
      description: The policy's response time as written (null for C(none)).
      type: str
    response_time_minutes:
      description: The same in minutes when the policy gives a number, else its text.
      type: raw
    escalation:
      description: The policy's escalation text.
      type: str
    escalate_to:
      description: Contact keys engaged at this level.
      type: list
      elements: str
    channels:
      description: Notification channel keys (of C(sqlsynth_notify_channels)) for this level.
      type: list
      elements: str
    contacts:
      description: The engaged contacts, key to handle or address.
      type: dict
    verdict:
      description: The verdict triaged (null when none was given).
      type: str
    runbook:
      description: The runbook name given.
      type: str
    line:
      description: One line, for example C(P1 - error ratio 23% above 10% - respond within 60 min - escalation...).
      type: str
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.sqlsynth.runbooks.plugins.plugin_utils._severity import SeverityError, triage


def _severity(data, policy, rules, contacts=None):
    try:
        return triage(data, policy, rules, contacts=contacts)
    except SeverityError as exc:
        raise AnsibleFilterError("severity: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"severity": _severity}
