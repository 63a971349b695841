#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: metrics_info
short_description: Error ratio, p95 latency and request rate of the app from /metrics or Prometheus
version_added: 0.1.0
description:
  - With O(url), reads the app's C(/metrics) (Prometheus text format) twice, O(window) seconds apart, and
    computes from the increase of the counters the error ratio C(errors / requests), the request rate, and
    the 95th percentile latency from the increase of the histogram buckets, interpolated like PromQL's
    C(histogram_quantile). A counter that went down between the samples (process restart) counts from
    zero, as PromQL's C(increase) does, so ratios are never negative. O(window=0) reads once and reports
    the totals since the process started.
  - With O(prometheus_url), asks the Prometheus HTTP API the same questions with instant queries over
    C(rate(...[window])), and lists the firing alerts.
  - Judges the error ratio against O(error_ratio_max) and p95 against O(p95_max_seconds) and returns RV(ok)
    and short human RV(failures). An unreachable endpoint, an HTTP error, text that does not parse or a
    metric that is not exposed is a failure in the result, not a failed task; invalid options fail the task.
  - The defaults are the metric names the app really emits (not the C(api_requests_total) and
    C(sql_synthesizer_*) names of its documentation).
author: sqlsynth.runbooks contributors (@sqlsynth)
extends_documentation_fragment:
  - sqlsynth.runbooks.info_module
  - sqlsynth.runbooks.metrics
  - sqlsynth.runbooks.tls
options:
  url:
    description: URL of a C(/metrics) endpoint. Exactly one of O(url) and O(prometheus_url) is required.
    type: str
  prometheus_url:
    description: Base URL of Prometheus (V(http://127.0.0.1:9090)); the C(/api/v1/...) paths are added.
    type: str
  window:
    description:
      - Seconds between the two samples of O(url) (the module waits that long), or the range of the
        C(rate()) queries for O(prometheus_url), which should span at least two scrape intervals.
      - Defaults to V(10) for O(url) and V(300) for O(prometheus_url).
    type: float
  error_ratio_max:
    description: An error ratio above this (0 to 1) is a failure.
    type: float
    default: 0.01
  p95_max_seconds:
    description: A p95 latency above this many seconds is a failure.
    type: float
    default: 0.1
  include_alerts:
    description: List the firing alerts (O(prometheus_url) only).
    type: bool
    default: true
requirements:
  - prometheus-client (for O(url); its text format parser)
seealso:
  - module: sqlsynth.runbooks.http_probe_info
  - name: histogram_quantile
    description: How PromQL interpolates quantiles in histogram buckets.
    link: https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile
'''

EXAMPLES = r'''
- name: Error ratio and p95 of the next 30 seconds of traffic
  sqlsynth.runbooks.metrics_info:
    url: http://127.0.0.1:5000/metrics
    window: 30
  register: app_metrics

- name: The same over 5 minutes from Prometheus, with the firing alerts
  sqlsynth.runbooks.metrics_info:
    prometheus_url: http://127.0.0.1:9090
    window: 300
    error_ratio_max: 0.1
  register: prom

- name: Show what Prometheus says
  ansible.builtin.debug:
    msg: "{{ prom.error_ratio }} errors/request, alerts: {{ prom.firing_alerts | map(attribute='alertname') }}"
'''

RETURN = r'''
source:
  description: Where the numbers come from, V(metrics) (O(url)) or V(prometheus) (O(prometheus_url)).
  returned: always
  type: str
  sample: metrics
url:
  description: The O(url) or O(prometheus_url) read.
  returned: always
  type: str
window:
  description: Seconds the numbers cover (0 means since the process started).
  returned: always
  type: float
  sample: 10.0
requests:
  description: Increase of O(requests_metric) over the window (Prometheus extrapolates, so it may be fractional).
  returned: always
  type: float
  sample: 120.0
errors:
  description: Increase of O(errors_metric) over the window.
  returned: always
  type: float
  sample: 3.0
error_ratio:
  description: RV(errors) / RV(requests); null when there were no requests.
  returned: always
  type: float
  sample: 0.025
p95_seconds:
  description: 95th percentile latency over the window; null when nothing was observed.
  returned: always
  type: float
  sample: 0.042
request_rate:
  description: Requests per second over the window; null with O(window=0).
  returned: always
  type: float
  sample: 12.0
ok:
  description: The numbers could be read and are within the thresholds.
  returned: always
  type: bool
failures:
  description: Short human lines, one per problem.
  returned: always
  type: list
  elements: str
  sample: ["error ratio 2.5% above 1.0% (3 errors in 120 requests over 10 s)"]
firing_alerts:
  description: Alerts in state C(firing) (empty when O(include_alerts=false)).
  returned: with O(prometheus_url)
  type: list
  elements: dict
  contains:
    alertname:
      description: The alert's name.
      type: str
    severity:
      description: Its C(severity) label, null when it has none.
      type: str
    state:
      description: Always C(firing).
      type: str
    labels:
      description: All labels.
      type: dict
    activeAt:
      description: When it became active (RFC 3339).
      type: str
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._http import (
    check_tls_options, parse_url, tls_argument_spec)
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._metrics import (
    DEFAULT_WINDOW, HAS_PROMETHEUS_CLIENT, PROMETHEUS_CLIENT_IMPORT_ERROR, check_metric_names, metric_argument_spec,
    metrics_report)


def main():
    argument_spec = metric_argument_spec()
    argument_spec.update(
        url=dict(type='str'),
        prometheus_url=dict(type='str'),
        window=dict(type='float'),
        error_ratio_max=dict(type='float', default=0.01),
        p95_max_seconds=dict(type='float', default=0.1),
        include_alerts=dict(type='bool', default=True),
    )
    argument_spec.update(tls_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[('url', 'prometheus_url')],
                           required_one_of=[('url', 'prometheus_url')])
    params = dict(module.params)
    params['context'] = check_tls_options(module)
    source = 'prometheus' if params['prometheus_url'] else 'metrics'
    option = 'prometheus_url' if params['prometheus_url'] else 'url'
    try:
        parse_url(params[option])
    except ValueError as exc:
        module.fail_json(msg='%s: %s' % (option, exc))
    check_metric_names(module)
    if params['window'] is None:
        params['window'] = DEFAULT_WINDOW[source]
    if params['window'] < 0 or (source == 'prometheus' and params['window'] < 1):
        module.fail_json(msg='window must be %s, got %s' % (
            'at least 1 with prometheus_url' if source == 'prometheus' else 'at least 0', params['window']))
    if not 0 <= params['error_ratio_max'] <= 1:
        module.fail_json(msg='error_ratio_max must be between 0 and 1, got %s' % params['error_ratio_max'])
    if params['p95_max_seconds'] <= 0:
        module.fail_json(msg='p95_max_seconds must be greater than 0, got %s' % params['p95_max_seconds'])
    if source == 'metrics' and not HAS_PROMETHEUS_CLIENT:
        module.fail_json(msg=missing_required_lib('prometheus-client'), exception=PROMETHEUS_CLIENT_IMPORT_ERROR)
    module.exit_json(changed=False, **metrics_report(params))


if __name__ == '__main__':
    main()
