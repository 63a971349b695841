# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Watch /metrics until the service is back: consecutive good windows, optionally under synthetic traffic.

The scraping, counter-reset handling and p95 interpolation are those of _metrics (metrics_info);
this file only adds the loop over windows and the synthetic traffic.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import threading
import time

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._http import describe_error, request
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._metrics import (
    QUANTILE, MetricsError, bucket_counts, counter_sum, found, histogram_quantile, increase, scrape)


class Traffic(object):
    """Synthetic read queries (POST {"question": ...}) at a steady rate, in a thread, until stopped."""

    def __init__(self, spec, context, timeout, server_name=None):
        self.spec = spec
        self.context = context
        self.timeout = timeout
        self.server_name = server_name
        self.statuses = {}
        self.failures = {}
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='metrics-watch-traffic')
        self._thread.daemon = True

    def start(self):
        self._thread.start()
        return self

    def _one(self):
        headers = {}
        if self.spec.get('api_key'):
            headers[self.spec['api_key_header']] = self.spec['api_key']
        try:
            resp = request(self.spec['url'], self.context, self.timeout, method='POST', headers=headers,
                           body={'question': self.spec['question']}, server_name=self.server_name, max_body=65536)
        except Exception as exc:  # a failed synthetic query is a finding, never a crash of the watch
            key = describe_error(exc, self.timeout)
            with self._lock:
                self.sent += 1
                self.failures[key] = self.failures.get(key, 0) + 1
            return
        with self._lock:
            self.sent += 1
            key = str(resp['status'])
            self.statuses[key] = self.statuses.get(key, 0) + 1

    def _run(self):
        interval = 1.0 / self.spec['per_second']
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._one()
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:  # slower than the rate asked for: do not burst to catch up
                next_at = time.monotonic()
                delay = 0
            if self._stop.wait(delay):
                break

    def stop(self):
        self._stop.set()
        self._thread.join(self.timeout + 1)

    def summary(self):
        """What was sent (never the API key)."""
        with self._lock:
            return dict(url=self.spec['url'], per_second=self.spec['per_second'], sent=self.sent,
                        statuses=dict(self.statuses), failures=dict(self.failures))


def _window(before, after, opts):
    """The numbers of one window between two scrapes and its verdict."""
    names = opts['requests_metric'], opts['errors_metric'], opts['duration_metric']
    sample = dict(requests=None, errors=None, error_ratio=None, p95_seconds=None, ok=False, failures=[])
    failures = sample['failures']
    for name in names[:2]:
        if not found(after, name):
            failures.append('metric %s not found at %s' % (name, opts['url']))
    if failures:
        return sample
    deltas = increase(before, after)
    requests = sample['requests'] = counter_sum(deltas, names[0])
    errors = sample['errors'] = counter_sum(deltas, names[1])
    p95 = None
    if found(after, names[2]):
        p95 = histogram_quantile(QUANTILE, bucket_counts(deltas, names[2]))
        p95 = sample['p95_seconds'] = None if p95 is None else round(p95, 6)
    if requests:
        ratio = sample['error_ratio'] = round(errors / requests, 6)
        if ratio > opts['error_ratio_max']:
            failures.append('error ratio %.1f%% above %.1f%% (%g errors in %g requests)' % (
                ratio * 100, opts['error_ratio_max'] * 100, errors, requests))
        limit = opts.get('p95_max_seconds')
        if limit is not None and p95 is not None and p95 > limit:
            failures.append('p95 latency %.3f s above %.3f s' % (p95, limit))
    elif opts.get('traffic'):
        failures.append('no requests counted although synthetic traffic was sent')
    sample['ok'] = not failures
    return sample


def watch(opts, clock=time.monotonic, sleep=time.sleep):
    """Scrape opts['url'] every window_seconds until `consecutive` windows in a row pass or `timeout` passes.

    opts: url, requests_metric, errors_metric, duration_metric, window_seconds, consecutive, error_ratio_max,
    p95_max_seconds (or None), timeout, traffic (dict or None), context, request_timeout, server_name.
    """
    scrape_opts = dict(context=opts['context'], timeout=opts['request_timeout'], server_name=opts.get('server_name'))
    traffic = None
    if opts.get('traffic'):
        traffic = Traffic(opts['traffic'], opts['context'], opts['request_timeout'], opts.get('server_name')).start()
    start = clock()
    deadline = start + opts['timeout']
    samples, streak, passed = [], 0, False
    try:
        try:
            previous = scrape(opts['url'], scrape_opts)
            baseline_error = None
        except MetricsError as exc:
            previous, baseline_error = None, str(exc)
        next_at = start
        while True:
            next_at += opts['window_seconds']
            if next_at > deadline:
                break
            sleep(max(0.0, next_at - clock()))
            error = None
            try:
                current = scrape(opts['url'], scrape_opts)
            except MetricsError as exc:
                current, error = None, str(exc)
            if current is None:
                sample = dict(requests=None, errors=None, error_ratio=None, p95_seconds=None, ok=False, failures=[error])
            elif previous is None:
                sample = dict(requests=None, errors=None, error_ratio=None, p95_seconds=None, ok=False,
                              failures=['no window yet: the scrape before failed (%s)' % baseline_error])
            else:
                sample = _window(previous, current, opts)
            sample['t'] = round(clock() - start, 2)
            samples.append(sample)
            if current is not None:
                previous = current
            else:
                previous, baseline_error = None, error
            streak = streak + 1 if sample['ok'] else 0
            if streak >= opts['consecutive']:
                passed = True
                break
    finally:
        if traffic is not None:
            traffic.stop()
    result = dict(passed=passed, seconds=round(clock() - start, 2), samples=samples, consecutive_ok=streak,
                  traffic=traffic.summary() if traffic is not None else None)
    if passed:
        result['msg'] = '%d consecutive windows of %g s passed (error ratio <= %g%s) after %g s' % (
            opts['consecutive'], opts['window_seconds'], opts['error_ratio_max'],
            ', p95 <= %g s' % opts['p95_max_seconds'] if opts.get('p95_max_seconds') is not None else '',
            result['seconds'])
    else:
        last = samples[-1]['failures'] if samples and samples[-1]['failures'] else []
        result['msg'] = ('the service did not recover within %g s: %d good windows of %g s in a row needed, '
                         '%d of %d windows passed, the last %d in a row%s' % (
                             opts['timeout'], opts['consecutive'], opts['window_seconds'],
                             sum(1 for s in samples if s['ok']), len(samples), streak,
                             '; last window: %s' % '; '.join(last) if last else ''))
    return result
