#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: metrics_watch
short_description: Watch the app's /metrics until errors and latency stay good for several windows in a row
version_added: 0.1.0
description:
  - Reads the app's C(/metrics) every O(window_seconds) and judges each window between two reads by the
    increase of the counters, as M(sqlsynth.runbooks.metrics_info) does (a counter that went down, because
    the app restarted, counts from zero; p95 is interpolated like PromQL's C(histogram_quantile)).
  - A window passes when its error ratio is at most O(error_ratio_max) and, when O(p95_max_seconds) is set,
    its p95 latency at most that. A window without requests passes only when no synthetic traffic is sent;
    with O(traffic) set, a quiet window means the queries are not reaching the app.
  - The watch passes as soon as O(consecutive) windows in a row pass, and fails after O(timeout) seconds
    with every sample in the result and a message saying how far it got. A C(/metrics) that cannot be read
    fails that window (and the next, which has no baseline) without ending the watch.
  - With O(traffic), sends synthetic read queries (a C(POST) of a JSON body with the C(question)) at O(traffic.per_second) to
    O(traffic.url) during the whole watch, so the windows have requests to judge.
author: sqlsynth.runbooks contributors (@sqlsynth)
attributes:
  check_mode:
    support: full
    description: The module changes nothing. It runs the same in check mode, including the synthetic
      traffic, which is read queries only (the app answers them from its cache or with a SELECT).
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
extends_documentation_fragment:
  - sqlsynth.runbooks.metrics
  - sqlsynth.runbooks.tls
options:
  url:
    description: URL of the app's C(/metrics) endpoint.
    type: str
    required: true
  window_seconds:
    description: Seconds between two reads of O(url); each window is judged on its own.
    type: float
    default: 3
  consecutive:
    description: Windows in a row that must pass.
    type: int
    default: 3
  error_ratio_max:
    description: A window whose error ratio (0 to 1) is above this fails.
    type: float
    default: 0.01
  p95_max_seconds:
    description: A window whose p95 latency is above this many seconds fails. Not checked when unset.
    type: float
  timeout:
    description:
      - Seconds after which the watch gives up and fails. Must leave room for O(consecutive) windows.
      - Unlike the other HTTP modules this bounds the whole watch; O(request_timeout) bounds each request.
    type: float
    default: 120
  request_timeout:
    description: Seconds allowed for connecting and reading, per request (reads of O(url) and synthetic queries).
    type: float
    default: 5
  traffic:
    description: Synthetic traffic to send during the watch. None when unset.
    type: dict
    suboptions:
      url:
        description: URL of the query endpoint, for example V(https://127.0.0.1:8443/api/query).
        type: str
        required: true
      api_key:
        description: API key sent in O(traffic.api_key_header). Never returned or logged.
        type: str
      api_key_header:
        description: Header that carries O(traffic.api_key).
        type: str
        default: X-API-Key
      question:
        description: The question asked (a read query).
        type: str
        default: how many users are there
      per_second:
        description: Queries per second (more than 0, at most 50). They are sent one after the other, so a
          slow app gets fewer.
        type: float
        default: 2
requirements:
  - prometheus-client (its text format parser)
seealso:
  - module: sqlsynth.runbooks.metrics_info
'''

EXAMPLES = r'''
- name: Wait until three 5-second windows in a row have at most 1% errors, under synthetic traffic
  sqlsynth.runbooks.metrics_watch:
    url: http://127.0.0.1:5000/metrics
    window_seconds: 5
    consecutive: 3
    error_ratio_max: 0.01
    p95_max_seconds: 0.5
    timeout: 180
    traffic:
      url: https://127.0.0.1:8443/api/query
      api_key: "{{ sqlsynth_api_key }}"
      per_second: 2
    ca_path: /opt/sqlsynth-lab/tls/ca.crt
  register: recovery

- name: Show the windows
  ansible.builtin.debug:
    msg: "{{ recovery.samples | map(attribute='error_ratio') }}"
'''

RETURN = r'''
passed:
  description: O(consecutive) windows in a row passed before O(timeout).
  returned: always
  type: bool
seconds:
  description: How long the watch took.
  returned: always
  type: float
  sample: 9.1
samples:
  description: Every window, in order.
  returned: always
  type: list
  elements: dict
  contains:
    t:
      description: Seconds from the start of the watch to the end of the window.
      type: float
    requests:
      description: Increase of O(requests_metric) in the window; null when it could not be read.
      type: float
    errors:
      description: Increase of O(errors_metric) in the window; null when it could not be read.
      type: float
    error_ratio:
      description: RV(samples[].errors) / RV(samples[].requests); null without requests.
      type: float
    p95_seconds:
      description: 95th percentile latency in the window; null when nothing was observed.
      type: float
    ok:
      description: The window passed.
      type: bool
    failures:
      description: Why the window failed (empty when it passed).
      type: list
      elements: str
  sample:
    - {t: 3.0, requests: 6.0, errors: 6.0, error_ratio: 1.0, p95_seconds: 0.004, ok: false,
       failures: ["error ratio 100.0% above 1.0% (6 errors in 6 requests)"]}
    - {t: 6.0, requests: 6.0, errors: 0.0, error_ratio: 0.0, p95_seconds: 0.012, ok: true, failures: []}
consecutive_ok:
  description: Windows in a row that passed at the end of the watch.
  returned: always
  type: int
traffic:
  description: What the synthetic traffic sent (without the API key); null without O(traffic).
  returned: always
  type: dict
  contains:
    url:
      description: O(traffic.url).
      type: str
    per_second:
      description: The rate asked for.
      type: float
    sent:
      description: Queries sent.
      type: int
    statuses:
      description: HTTP status (as text) to count.
      type: dict
    failures:
      description: Connection failure to count.
      type: dict
msg:
  description: One line saying whether and when the service recovered, or how far it got.
  returned: always
  type: str
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._http import make_context, parse_url, tls_argument_spec
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._metrics import (
    HAS_PROMETHEUS_CLIENT, PROMETHEUS_CLIENT_IMPORT_ERROR, check_metric_names, metric_argument_spec)
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._watch import watch

MAX_PER_SECOND = 50


def check_options(module):
    """fail_json on bad options; return the SSL context."""
    params = module.params
    for option, value in [('url', params['url'])] + ([('traffic.url', params['traffic']['url'])] if params['traffic'] else []):
        try:
            parse_url(value)
        except ValueError as exc:
            module.fail_json(msg='%s: %s' % (option, exc))
    check_metric_names(module)
    if params['window_seconds'] <= 0:
        module.fail_json(msg='window_seconds must be greater than 0, got %s' % params['window_seconds'])
    if params['consecutive'] < 1:
        module.fail_json(msg='consecutive must be at least 1, got %s' % params['consecutive'])
    if not 0 <= params['error_ratio_max'] <= 1:
        module.fail_json(msg='error_ratio_max must be between 0 and 1, got %s' % params['error_ratio_max'])
    if params['p95_max_seconds'] is not None and params['p95_max_seconds'] <= 0:
        module.fail_json(msg='p95_max_seconds must be greater than 0, got %s' % params['p95_max_seconds'])
    if params['request_timeout'] <= 0:
        module.fail_json(msg='request_timeout must be greater than 0, got %s' % params['request_timeout'])
    needed = params['window_seconds'] * params['consecutive']
    if params['timeout'] < needed:
        module.fail_json(msg='timeout %g s is shorter than consecutive x window_seconds = %g s: the watch could never pass'
                         % (params['timeout'], needed))
    traffic = params['traffic']
    if traffic and not 0 < traffic['per_second'] <= MAX_PER_SECOND:
        module.fail_json(msg='traffic.per_second must be greater than 0 and at most %d, got %s'
                         % (MAX_PER_SECOND, traffic['per_second']))
    if traffic and not (traffic['question'] or '').strip():
        module.fail_json(msg='traffic.question must not be empty')
    try:
        return make_context(params['validate_certs'], params['ca_path'])
    except (IOError, OSError) as exc:  # ssl.SSLError is an OSError
        module.fail_json(msg='cannot load ca_path %s: %s' % (params['ca_path'], exc))


def main():
    argument_spec = metric_argument_spec()
    argument_spec.update(tls_argument_spec())
    argument_spec.update(
        url=dict(type='str', required=True),
        window_seconds=dict(type='float', default=3.0),
        consecutive=dict(type='int', default=3),
        error_ratio_max=dict(type='float', default=0.01),
        p95_max_seconds=dict(type='float'),
        timeout=dict(type='float', default=120.0),
        request_timeout=dict(type='float', default=5.0),
        traffic=dict(type='dict', options=dict(
            url=dict(type='str', required=True),
            api_key=dict(type='str', no_log=True),
            api_key_header=dict(type='str', default='X-API-Key', no_log=False),
            question=dict(type='str', default='how many users are there'),
            per_second=dict(type='float', default=2.0),
        )),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    context = check_options(module)
    if not HAS_PROMETHEUS_CLIENT:
        module.fail_json(msg=missing_required_lib('prometheus-client'), exception=PROMETHEUS_CLIENT_IMPORT_ERROR)
    opts = dict(module.params)
    opts['context'] = context
    result = watch(opts)
    if not result['passed']:
        module.fail_json(changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
