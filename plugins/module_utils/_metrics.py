# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Error ratio, p95 latency and request rate from a /metrics endpoint or the Prometheus HTTP API.

From /metrics: two scrapes ``window`` seconds apart; per-series deltas with counter resets
handled like Prometheus' increase() (a lower second value counts as a restart from zero);
p95 interpolated in the delta of the histogram buckets like histogram_quantile().
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import math
import re
import time
import traceback

try:
    from urllib.parse import urlencode
except ImportError:  # pragma: no cover - Python 2 is not supported by this collection
    urlencode = None

try:
    from prometheus_client.parser import text_string_to_metric_families
    HAS_PROMETHEUS_CLIENT = True
    PROMETHEUS_CLIENT_IMPORT_ERROR = None
except ImportError:
    HAS_PROMETHEUS_CLIENT = False
    PROMETHEUS_CLIENT_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._http import describe_error, request

METRIC_NAME = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*$')
MAX_TEXT = 16 * 1024 * 1024
QUANTILE = 0.95
DEFAULT_WINDOW = {'metrics': 10.0, 'prometheus': 300.0}


def metric_argument_spec():
    """The metric-name options (doc fragment sqlsynth.runbooks.metrics)."""
    return dict(
        requests_metric=dict(type='str', default='queries_total'),
        errors_metric=dict(type='str', default='query_errors_total'),
        duration_metric=dict(type='str', default='query_duration_seconds'),
    )


def check_metric_names(module):
    """fail_json when a metric-name option is not a valid Prometheus metric name."""
    for name in ('requests_metric', 'errors_metric', 'duration_metric'):
        if not METRIC_NAME.match(module.params[name]):
            module.fail_json(msg='%s %r is not a valid Prometheus metric name' % (name, module.params[name]))


class MetricsError(Exception):
    """A reason the metrics could not be read; becomes one line in failures."""


def _get(url, opts, accept):
    """Body of a GET as text; MetricsError with one readable line on any failure."""
    try:
        resp = request(url, opts['context'], opts['timeout'], headers={'Accept': accept},
                       server_name=opts.get('server_name'), max_body=MAX_TEXT)
    except Exception as exc:
        raise MetricsError('cannot read %s: %s' % (url, describe_error(exc, opts['timeout'])))
    if resp['truncated']:
        raise MetricsError('%s returned more than %d bytes' % (url, MAX_TEXT))
    return resp['status'], resp['body'].decode('utf-8', 'replace')


# ---------------------------------------------------------------- /metrics text

def scrape(url, opts):
    """One sample: {'names': set of metric names seen, 'series': {(sample name, labels): value}}."""
    status, text = _get(url, opts, 'text/plain;version=0.0.4')
    if status != 200:
        raise MetricsError('HTTP %s from %s' % (status, url))
    return parse(text, url)


def parse(text, where='the metrics text'):
    names, series = set(), {}
    try:
        for family in text_string_to_metric_families(text):
            names.add(family.name)
            for sample in family.samples:
                names.add(sample.name)
                series[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    except Exception as exc:  # the parser raises ValueError, IndexError, KeyError ... on bad text
        raise MetricsError('cannot parse the Prometheus text from %s: %s' % (where, exc or exc.__class__.__name__))
    if not names:
        raise MetricsError('no metrics in %s' % where)
    return dict(names=names, series=series)


def _sample_names(name):
    """A counter may be named with or without its _total suffix."""
    base = name[:-6] if name.endswith('_total') else name
    return (name, base + '_total')


def found(snapshot, name):
    """The metric is exposed (a labelled counter has only its TYPE line until first incremented)."""
    return bool(set(_sample_names(name) + (name[:-6] if name.endswith('_total') else name,)) & snapshot['names'])


def increase(first, second):
    """Per-series increase between two samples; a lower second value is a reset (counts from 0)."""
    out = {}
    for key, value in second['series'].items():
        before = first['series'].get(key) if first else None
        out[key] = value if before is None or value < before else value - before
    return out


def counter_sum(deltas, name):
    names = _sample_names(name)
    return sum(v for (sample, labels), v in deltas.items() if sample in names)


def bucket_counts(deltas, name):
    """{upper bound: count} summed over every series of the histogram's _bucket samples."""
    buckets = {}
    for (sample, labels), value in deltas.items():
        if sample == name + '_bucket':
            le = dict(labels).get('le')
            if le is not None:
                bound = float(le)
                buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


def histogram_quantile(q, buckets):
    """Prometheus' histogram_quantile() on {upper bound: cumulative count}; None when there is nothing."""
    pairs = sorted(buckets.items())
    if len(pairs) < 2 or not math.isinf(pairs[-1][0]):
        return None
    fixed, highest = [], 0.0
    for bound, count in pairs:  # per-bucket resets can break monotonicity; Prometheus fixes it the same way
        highest = max(highest, count)
        fixed.append((bound, highest))
    observations = fixed[-1][1]
    if observations <= 0:
        return None
    rank = q * observations
    index = next(i for i, (bound, count) in enumerate(fixed) if count >= rank)
    if index == len(fixed) - 1:
        return fixed[-2][0]
    if index == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start, below = (0.0, 0.0) if index == 0 else fixed[index - 1]
    end, count = fixed[index]
    return start + (end - start) * (rank - below) / (count - below)


def from_metrics(url, opts):
    result = _empty('metrics', url, opts['window'])
    names = opts['requests_metric'], opts['errors_metric'], opts['duration_metric']
    try:
        started = time.monotonic()
        first = scrape(url, opts) if opts['window'] > 0 else None
        if first is not None:
            time.sleep(max(0.0, opts['window'] - (time.monotonic() - started)))
        second_at = time.monotonic()
        second = scrape(url, opts)
    except MetricsError as exc:
        result['failures'].append(str(exc))
        return result
    for name in names:
        if not found(second, name):
            result['failures'].append('metric %s not found at %s' % (name, url))
    deltas = increase(first, second)
    if found(second, names[0]):
        result['requests'] = counter_sum(deltas, names[0])
        if first is not None:
            result['request_rate'] = round(result['requests'] / max(second_at - started, 1e-9), 3)
    if found(second, names[1]):
        result['errors'] = counter_sum(deltas, names[1])
    if found(second, names[2]):
        result['p95_seconds'] = histogram_quantile(QUANTILE, bucket_counts(deltas, names[2]))
    return result


# ---------------------------------------------------------------- Prometheus API

def _range(window):
    return '%ds' % window if window == int(window) else '%dms' % (window * 1000)


def _api(base, path, opts):
    url = base.rstrip('/') + path
    status, text = _get(url, opts, 'application/json')
    try:
        doc = json.loads(text)
    except ValueError:
        raise MetricsError('HTTP %s from %s, not the Prometheus API (body is not JSON)' % (status, url))
    if not isinstance(doc, dict) or doc.get('status') != 'success':
        doc = doc if isinstance(doc, dict) else {}
        raise MetricsError('Prometheus API error (HTTP %s) for %s: %s' % (
            status, url, doc.get('error') or doc.get('errorType') or 'unexpected answer'))
    return doc.get('data') or {}


def instant(base, expr, opts):
    """Value of a scalar-like instant query; None when the result is empty or NaN."""
    data = _api(base, '/api/v1/query?' + urlencode({'query': expr}), opts)
    result = data.get('result') or []
    if data.get('resultType') == 'scalar':
        result = [{'value': result}]
    if not result:
        return None
    try:
        value = float(result[0]['value'][1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise MetricsError('unexpected answer from Prometheus for %s' % expr)
    return None if math.isnan(value) or math.isinf(value) else value


def firing_alerts(base, opts):
    alerts = _api(base, '/api/v1/alerts', opts).get('alerts') or []
    return [dict(alertname=a.get('labels', {}).get('alertname'), severity=a.get('labels', {}).get('severity'),
                 state=a.get('state'), labels=a.get('labels', {}), activeAt=a.get('activeAt'))
            for a in alerts if a.get('state') == 'firing']


def from_prometheus(base, opts):
    result = _empty('prometheus', base, opts['window'])
    result['firing_alerts'] = []
    span = _range(opts['window'])
    requests_name, errors_name, duration_name = (
        opts['requests_metric'], opts['errors_metric'], opts['duration_metric'])
    try:
        rate = instant(base, 'sum(rate(%s[%s]))' % (requests_name, span), opts)
        error_rate = instant(base, 'sum(rate(%s[%s]))' % (errors_name, span), opts)
        result['p95_seconds'] = instant(base, 'histogram_quantile(%s, sum by (le) (rate(%s_bucket[%s])))' % (
            QUANTILE, duration_name, span), opts)
        if opts['include_alerts']:
            result['firing_alerts'] = firing_alerts(base, opts)
    except MetricsError as exc:
        result['failures'].append(str(exc))
        return result
    if rate is None:
        result['failures'].append('Prometheus has no samples of %s over the last %s (not scraped, or never '
                                  'incremented)' % (requests_name, span))
        return result
    result['request_rate'] = round(rate, 3)
    result['requests'] = round(rate * opts['window'], 3)
    result['errors'] = round((error_rate or 0.0) * opts['window'], 3)  # no series yet = no error yet
    return result


# ---------------------------------------------------------------- common

def _empty(source, url, window):
    return dict(source=source, url=url, window=window, requests=None, errors=None, error_ratio=None,
                p95_seconds=None, request_rate=None, ok=False, failures=[])


def judge(result, error_ratio_max, p95_max_seconds):
    """Fill error_ratio, ok and the threshold failures."""
    if result['requests'] and result['errors'] is not None:
        result['error_ratio'] = round(result['errors'] / result['requests'], 6)
    if result['p95_seconds'] is not None:
        result['p95_seconds'] = round(result['p95_seconds'], 6)
    ratio, p95 = result['error_ratio'], result['p95_seconds']
    if ratio is not None and ratio > error_ratio_max:
        result['failures'].append('error ratio %.1f%% above %.1f%% (%g errors in %g requests over %g s)' % (
            ratio * 100, error_ratio_max * 100, result['errors'], result['requests'], result['window']))
    if p95 is not None and p95 > p95_max_seconds:
        result['failures'].append('p95 latency %.3f s above %.3f s' % (p95, p95_max_seconds))
    result['ok'] = not result['failures']
    return result


def metrics_report(opts):
    """opts: url or prometheus_url, the three metric names, window, thresholds, include_alerts,
    context, timeout, server_name."""
    if opts.get('prometheus_url'):
        result = from_prometheus(opts['prometheus_url'], opts)
    else:
        result = from_metrics(opts['url'], opts)
    return judge(result, opts['error_ratio_max'], opts['p95_max_seconds'])
