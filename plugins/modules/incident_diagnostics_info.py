#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: incident_diagnostics_info
short_description: Every incident signal of the service in one concurrent, read-only pass
version_added: 0.1.0
description:
  - Gathers, concurrently and each under its own time limit, the diagnostics an incident responder reads
    first, and returns them in one RV(diagnostics) dict whose every section is always present.
  - C(metrics) - error ratio, p95 latency and errors by type from two samples of C(/metrics)
    O(metrics_window) seconds apart (counter resets handled like PromQL's C(increase)).
  - C(health) - C(/health) through O(app_url), and through O(app_direct_url) when given.
  - C(synthetic) - one C(POST /api/query) with O(synthetic_question) and O(api_key).
  - C(logs) - the app log (ERROR, CRITICAL and Traceback lines, the last 20 with secrets masked), the
    security audit log (JSON lines; events by type, injection attempts, auth failures, rate limiting,
    offenders by client) and the proxy access log (nginx C(combined) or a JSON C(log_format) with
    C(time), C(remote_addr) and C(status), told apart line by line), each over the last
    O(log_window_minutes). Malformed lines are counted, never fatal. A missing or empty file is a
    section result with a note, not a failure.
  - C(postgres) - C(pg_stat_activity) (this session excluded) - connections by state, sessions idle in
    transaction longer than O(idle_in_transaction_seconds), active queries older than O(long_query_seconds),
    blocked sessions with their blockers (C(pg_blocking_pids)), the 5 slowest statements by mean time
    from C(pg_stat_statements) when the extension exists in O(login_db), and C(max_connections).
  - C(redis) - C(INFO memory), C(stats), C(clients), C(keyspace) and C(DBSIZE).
  - C(host) - load average per CPU, available memory and free disk space of O(disk_paths), on the host
    that runs the module.
  - RV(diagnostics.problems) lists in short human lines what is abnormal against the thresholds.
  - A section whose source fails or runs out of time has C(available=false) and a clear C(error); it never
    fails the task or the other sections. Only invalid options fail the task. No secret (O(api_key),
    O(login_password), O(password)) appears in the result or in error messages.
author: sqlsynth.runbooks contributors (@sqlsynth)
extends_documentation_fragment:
  - sqlsynth.runbooks.info_module
  - sqlsynth.runbooks.metrics
  - sqlsynth.runbooks.postgres
  - sqlsynth.runbooks.redis
notes:
  - The PostgreSQL role needs C(pg_monitor) (or C(pg_read_all_stats)) to see the state and query of other
    roles' sessions; without it, their sessions count under state C(unknown) and are not listed.
  - Only the last 16 MiB of each log file are read; older lines are not counted.
  - The app log has no time zone; its timestamps (Python logging's C(asctime)) are read as the local time
    of the host that runs the module.
  - The synthetic query is a read query through the real API; it is sent in check mode too.
options:
  sections:
    description: Sections to gather; the others are present in the result with C(available=false).
    type: list
    elements: str
    choices: [metrics, health, synthetic, logs, postgres, redis, host]
    default: [metrics, health, synthetic, logs, postgres, redis, host]
  app_url:
    description: Public base URL of the app (through the proxy), for C(/health) and the synthetic query.
    type: str
    required: true
  app_direct_url:
    description: The app's own base URL (behind the proxy); its C(/health) is reported under C(health.direct).
    type: str
  metrics_url:
    description: URL of the app's C(/metrics). Defaults to O(app_url) + C(/metrics).
    type: str
  api_key:
    description: API key for the synthetic query. Never returned or shown.
    type: str
  api_key_header:
    description: Header that carries O(api_key).
    type: str
    default: X-API-Key
  validate_certs:
    description:
      - Verify the certificate chain and name of C(https) URLs, and of Redis with O(tls).
    type: bool
    default: true
  ca_path:
    description:
      - CA bundle file (or OpenSSL hashed directory for HTTP) to verify C(https) URLs and, with O(tls), Redis
        against instead of the system store.
    type: path
  server_name:
    description: Name sent as SNI and C(Host) header and verified against the certificate of C(https) URLs.
    type: str
  timeout:
    description: Seconds allowed for connecting and for each read of an HTTP request.
    type: float
    default: 5
  metrics_window:
    description: Seconds between the two samples of C(/metrics); V(0) reads once (totals since the app started).
    type: float
    default: 4
  error_type_label:
    description: Label of O(errors_metric) that names the error type.
    type: str
    default: error_type
  synthetic_question:
    description: Question sent to C(POST /api/query).
    type: str
    default: how many users are there
  log_files:
    description: Paths of the logs to scan; a log without a path is reported as not available.
    type: dict
    default: {}
    suboptions:
      app:
        description: The app's log (free text).
        type: path
      audit:
        description: The security audit log (JSON lines).
        type: path
      access:
        description: The proxy's access log (nginx C(combined) or JSON lines).
        type: path
  log_window_minutes:
    description: Only log lines of the last this many minutes count.
    type: int
    default: 15
  log_since:
    description:
      - Only log lines after this time count (ISO 8601; without a zone it is UTC), when that is later than the
        start of the O(log_window_minutes) window - e.g. the time the previous incident was resolved, so an attack
        that was already handled does not count again. The per-minute rates use the shortened window.
    type: str
  long_query_seconds:
    description: An active query running longer than this is listed in C(postgres.long_running).
    type: float
    default: 60
  idle_in_transaction_seconds:
    description: A session idle in transaction longer than this is listed in C(postgres.idle_in_transaction).
    type: float
    default: 60
  app_application_name:
    description: C(application_name) of the app's database sessions, counted in C(postgres.connections.app).
    type: str
    default: sql_synthesizer
  disk_paths:
    description: Paths whose filesystem's free space is reported.
    type: list
    elements: path
    default: [/]
  section_timeout:
    description:
      - Seconds each section may take (the C(metrics) section gets O(metrics_window) more). A section still
        running then is reported as timed out.
    type: float
    default: 30
  error_ratio_max:
    description: An error ratio above this (0 to 1) is a problem.
    type: float
    default: 0.01
  p95_max_seconds:
    description: A p95 latency above this is a problem.
    type: float
    default: 0.1
  connections_max_ratio:
    description: PostgreSQL connections above this share of C(max_connections) are a problem.
    type: float
    default: 0.8
  redis_memory_max_ratio:
    description: Redis C(used_memory) at or above this share of C(maxmemory) is a problem.
    type: float
    default: 0.9
  offender_min_injection_attempts:
    description: A client with at least this many injection attempts in the window is a problem.
    type: int
    default: 1
  load_per_cpu_max:
    description: A 1-minute load average per CPU above this is a problem.
    type: float
    default: 2
  mem_available_min_ratio:
    description: Available memory below this share of the total is a problem.
    type: float
    default: 0.1
  disk_free_min_ratio:
    description: Free disk space below this share of the filesystem is a problem.
    type: float
    default: 0.1
seealso:
  - module: sqlsynth.runbooks.metrics_info
  - module: sqlsynth.runbooks.postgres_health_info
  - module: sqlsynth.runbooks.redis_health_info
  - module: sqlsynth.runbooks.http_probe_info
'''

EXAMPLES = r'''
- name: Gather the incident diagnostics of the lab
  sqlsynth.runbooks.incident_diagnostics_info:
    app_url: https://127.0.0.1:8443
    app_direct_url: http://127.0.0.1:5000
    metrics_url: http://127.0.0.1:5000/metrics
    server_name: sqlsynth.lab
    ca_path: /opt/sqlsynth-lab/ca/ca.crt
    api_key: "{{ sqlsynth_api_key }}"
    log_files:
      app: /opt/sqlsynth-lab/logs/app.log
      audit: /opt/sqlsynth-lab/logs/audit.log
      access: /opt/sqlsynth-lab/logs/nginx_access.log
    login_db: sql_synthesizer
    login_user: sql_user
    login_password: "{{ sqlsynth_db_password }}"
    password: "{{ sqlsynth_redis_password }}"
  register: incident

- name: Say what is wrong
  ansible.builtin.debug:
    msg: "{{ incident.diagnostics.problems }}"

- name: Only the database and the audit log, idle sessions after 5 minutes
  sqlsynth.runbooks.incident_diagnostics_info:
    app_url: https://sqlsynth.example.com
    sections: [postgres, logs]
    log_files:
      audit: /var/log/sql_synthesizer/audit.log
    idle_in_transaction_seconds: 300
    login_host: db.internal
    login_db: sql_synthesizer
    login_user: sql_user
    login_password: "{{ vault_db_password }}"
  register: db_view
'''

RETURN = r'''
diagnostics:
  description:
    - Every section, always present. Each has C(available) and C(error) (null, or why the source could not
      be read). The fields follow the "Diagnostics result" contract of the incident runbooks.
  returned: always
  type: dict
  contains:
    metrics:
      description:
        - C(error_ratio) (0 to 1, null without requests), C(p95_seconds), C(requests), C(errors),
          C(window_seconds), C(errors_by_type) ({type - count} of the errors in the window), C(url).
      type: dict
    health:
      description:
        - C(http_status), C(status) (V(healthy), V(unhealthy), V(unknown) when the body is not JSON),
          C(components) ({name - bool}), C(url); C(direct) with the same fields for O(app_direct_url).
      type: dict
    synthetic:
      description: C(ok) (HTTP 200 with a C(sql) field), C(http_status), C(seconds), C(error), C(url).
      type: dict
    logs:
      description:
        - C(app) - C(path), C(window_minutes), C(error_count), C(recent_errors) (last 20, secrets masked),
          C(malformed_lines), C(note).
        - C(audit) - C(path), C(window_minutes), C(events), C(events_by_type), C(injection_attempts),
          C(injection_attempts_per_minute), C(auth_failures), C(rate_limited), C(offenders) (list of
          C(client), C(events), C(injection_attempts), C(auth_failures), C(rate_limited), most injection
          attempts first, then most events; at most 10; C(query_execution) and C(unexpected_error) events
          do not make a client an offender), C(malformed_lines), C(note).
        - C(access) - C(path), C(window_minutes), C(requests), C(status_counts) (C(1xx) to C(5xx)),
          C(offenders) (C(client), C(requests), C(errors_4xx), C(errors_5xx), most errors first; at most 10),
          C(malformed_lines), C(note).
      type: dict
    postgres:
      description:
        - C(reachable), C(max_connections), C(connections) (C(total), C(by_state), C(app), C(ratio)),
          C(idle_in_transaction) (C(pid), C(seconds), C(application_name), C(client_addr), C(state), C(query)),
          C(long_running) (C(pid), C(seconds), C(state), C(application_name), C(query)),
          C(blocked) (C(pid), C(blocking_pids), C(seconds), C(query)), C(slowest_statements)
          (C(query), C(calls), C(mean_ms), C(total_ms)), C(pg_stat_statements) (bool). Queries are cut
          to 200 characters with secrets masked. C(error) starts with C(postgres unreachable:) when no
          connection could be made.
      type: dict
    redis:
      description:
        - C(reachable), C(used_memory), C(maxmemory), C(mem_ratio), C(hit_ratio), C(connected_clients),
          C(evicted_keys), C(keys) (DBSIZE of O(db)), C(maxmemory_policy).
      type: dict
    host:
      description:
        - C(cpu_count), C(load_1m), C(load_per_cpu), C(mem_available_ratio), C(disk) (list of C(path),
          C(free_ratio), C(free_bytes), C(total_bytes)).
      type: dict
    durations:
      description: Seconds each gathered section took.
      type: dict
      sample: {metrics: 4.02, postgres: 0.03}
    problems:
      description: Short human lines for what is abnormal; empty when nothing is.
      type: list
      elements: str
      sample: ["error ratio 34.0% over 4 s (34 errors in 100 requests)", "client 127.0.0.66: 42 injection attempts in 15 min"]
'''

import datetime

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._common import (
    check_non_negative, check_port, check_ratio_option)
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._diagnostics import SECTIONS, diagnose
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._http import make_context, parse_url
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._logscan import parse_iso
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._metrics import check_metric_names, metric_argument_spec
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._postgres import (
    connection_argument_spec as postgres_argument_spec)
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._redis import (
    connection_argument_spec as redis_argument_spec)

THRESHOLDS = ('error_ratio_max', 'p95_max_seconds', 'connections_max_ratio', 'redis_memory_max_ratio',
              'offender_min_injection_attempts', 'load_per_cpu_max', 'mem_available_min_ratio', 'disk_free_min_ratio')
POSTGRES_KEYS = ('login_host', 'login_port', 'login_user', 'login_password', 'login_db', 'connect_timeout',
                 'ssl_mode', 'ca_cert')
REDIS_KEYS = ('host', 'port', 'db', 'username', 'password', 'tls', 'validate_certs', 'ca_path', 'socket_timeout')


def argument_spec():
    spec = postgres_argument_spec()
    spec.update(redis_argument_spec())
    spec.update(metric_argument_spec())
    spec.update(
        sections=dict(type='list', elements='str', choices=list(SECTIONS), default=list(SECTIONS)),
        app_url=dict(type='str', required=True),
        app_direct_url=dict(type='str'),
        metrics_url=dict(type='str'),
        api_key=dict(type='str', no_log=True),
        api_key_header=dict(type='str', default='X-API-Key', no_log=False),
        validate_certs=dict(type='bool', default=True),
        ca_path=dict(type='path'),
        server_name=dict(type='str'),
        timeout=dict(type='float', default=5.0),
        metrics_window=dict(type='float', default=4.0),
        error_type_label=dict(type='str', default='error_type'),
        synthetic_question=dict(type='str', default='how many users are there'),
        log_files=dict(type='dict', default={}, options=dict(
            app=dict(type='path'), audit=dict(type='path'), access=dict(type='path'))),
        log_window_minutes=dict(type='int', default=15),
        log_since=dict(type='str'),
        long_query_seconds=dict(type='float', default=60.0),
        idle_in_transaction_seconds=dict(type='float', default=60.0),
        app_application_name=dict(type='str', default='sql_synthesizer'),
        disk_paths=dict(type='list', elements='path', default=['/']),
        section_timeout=dict(type='float', default=30.0),
        error_ratio_max=dict(type='float', default=0.01),
        p95_max_seconds=dict(type='float', default=0.1),
        connections_max_ratio=dict(type='float', default=0.8),
        redis_memory_max_ratio=dict(type='float', default=0.9),
        offender_min_injection_attempts=dict(type='int', default=1),
        load_per_cpu_max=dict(type='float', default=2.0),
        mem_available_min_ratio=dict(type='float', default=0.1),
        disk_free_min_ratio=dict(type='float', default=0.1),
    )
    return spec


def check_options(module):
    """fail_json with one clear line on a bad option; return the options diagnose() takes."""
    p = module.params
    for name in ('app_url', 'app_direct_url', 'metrics_url'):
        if p[name]:
            try:
                parse_url(p[name])
            except ValueError as exc:
                module.fail_json(msg='%s: %s' % (name, exc))
    check_metric_names(module)
    for name in ('timeout', 'section_timeout', 'socket_timeout', 'log_window_minutes', 'load_per_cpu_max',
                 'p95_max_seconds', 'offender_min_injection_attempts'):
        if p[name] <= 0:
            module.fail_json(msg='%s must be greater than 0, got %s' % (name, p[name]))
    check_non_negative(module, 'metrics_window', 'long_query_seconds', 'idle_in_transaction_seconds', 'db',
                       'connect_timeout')
    check_port(module, 'login_port')
    check_port(module, 'port')
    for name in ('error_ratio_max', 'connections_max_ratio', 'redis_memory_max_ratio', 'mem_available_min_ratio',
                 'disk_free_min_ratio'):
        check_ratio_option(module, name)
    if not p['disk_paths']:
        module.fail_json(msg='disk_paths must name at least one path')
    log_window = float(p['log_window_minutes'])
    if p['log_since']:
        try:
            since = parse_iso(p['log_since'])
        except ValueError:
            module.fail_json(msg='log_since %r is not an ISO 8601 time (e.g. 2026-12-05T18:00:00Z)' % p['log_since'])
        elapsed = (datetime.datetime.now(since.tzinfo) - since).total_seconds() / 60.0
        log_window = min(log_window, max(0.0, elapsed))
    try:
        context = make_context(p['validate_certs'], p['ca_path'])
    except (IOError, OSError) as exc:
        module.fail_json(msg='cannot load ca_path %s: %s' % (p['ca_path'], exc))
    secrets = [s for s in (p['api_key'], p['login_password'], p['password']) if s]
    return dict(
        sections=list(p['sections']), app_url=p['app_url'], app_direct_url=p['app_direct_url'],
        metrics_url=p['metrics_url'] or p['app_url'].rstrip('/') + '/metrics',
        api_key=p['api_key'], api_key_header=p['api_key_header'], context=context, server_name=p['server_name'],
        timeout=p['timeout'], metrics_window=p['metrics_window'], requests_metric=p['requests_metric'],
        errors_metric=p['errors_metric'], error_type_label=p['error_type_label'],
        duration_metric=p['duration_metric'], synthetic_question=p['synthetic_question'],
        log_files=dict((k, v) for k, v in (p['log_files'] or {}).items() if v),
        log_window_minutes=log_window, long_query_seconds=p['long_query_seconds'],
        idle_in_transaction_seconds=p['idle_in_transaction_seconds'],
        app_application_name=p['app_application_name'], disk_paths=p['disk_paths'],
        section_timeout=p['section_timeout'], secrets=secrets,
        postgres=dict((k, p[k]) for k in POSTGRES_KEYS), redis=dict((k, p[k]) for k in REDIS_KEYS),
        thresholds=dict((k, p[k]) for k in THRESHOLDS))


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    opts = check_options(module)
    module.exit_json(changed=False, diagnostics=diagnose(opts))


if __name__ == '__main__':
    main()
