#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: postgres_health_info
short_description: Read-only health check of a PostgreSQL server
version_added: 0.1.0
description:
  - Connects to PostgreSQL and reports the server version, connection use (by state and by application),
    queries running longer than O(long_running_seconds) and sessions idle in transaction longer than
    O(idle_in_transaction_seconds).
  - Judges the result against the thresholds and returns RV(ok) and short human RV(failures).
  - An unreachable server (refused, timeout, wrong password) is a result, not a task failure; RV(reachable)
    and RV(error) say what happened, so a verdict can be built from it. Invalid options fail the task.
  - The session is read-only (C(default_transaction_read_only)) with C(statement_timeout) set; all SQL is static.
author: sqlsynth.runbooks contributors (@sqlsynth)
extends_documentation_fragment:
  - sqlsynth.runbooks.info_module
  - sqlsynth.runbooks.postgres
options:
  long_running_seconds:
    description:
      - Active queries older than this many seconds are listed in RV(long_running) and count as a failure.
    type: float
    default: 60
  idle_in_transaction_seconds:
    description:
      - Sessions idle in transaction for longer than this many seconds are listed in RV(idle_in_transaction)
        and count as a failure.
    type: float
    default: 300
  connections_max_ratio:
    description:
      - Connections in use divided by C(max_connections) above this ratio count as a failure. Between 0 and 1.
    type: float
    default: 0.8
seealso:
  - module: sqlsynth.runbooks.redis_health_info
  - module: community.postgresql.postgresql_info
'''

EXAMPLES = r'''
- name: Check the application database
  sqlsynth.runbooks.postgres_health_info:
    login_host: "{{ sqlsynth_db_host }}"
    login_port: "{{ sqlsynth_db_port }}"
    login_user: "{{ sqlsynth_db_user }}"
    login_password: "{{ sqlsynth_db_password }}"
    login_db: "{{ sqlsynth_db_name }}"
    idle_in_transaction_seconds: 300
  register: db_health

- name: Stop when the database is unhealthy
  ansible.builtin.assert:
    that: db_health.ok
    fail_msg: "database: {{ db_health.failures | join('; ') }}"
'''

RETURN = r'''
reachable:
  description: Whether a session was opened and the queries answered.
  returned: always
  type: bool
error:
  description: Why the server could not be checked (no password in it); null when reachable.
  returned: always
  type: str
  sample: connection refused at 127.0.0.1:5432
error_kind:
  description: Class of RV(error) - refused, timeout, auth, dns, tls, query or other; null when reachable.
  returned: always
  type: str
  sample: refused
server_version:
  description: C(server_version) of the server.
  returned: when reachable
  type: str
  sample: "15.8 (Debian 15.8-0+deb12u1)"
connections:
  description: Client connections in use (this check's own session included) against C(max_connections).
  returned: when reachable
  type: dict
  contains:
    used:
      description: Client backends.
      type: int
      sample: 12
    max:
      description: C(max_connections).
      type: int
      sample: 100
    ratio:
      description: used / max.
      type: float
      sample: 0.12
    by_state:
      description: Client backends per state (C(unknown) where the login role may not see it).
      type: dict
      sample: {"active": 1, "idle": 10, "idle in transaction": 1}
    by_application:
      description: Client backends per C(application_name) (C((none)) when empty).
      type: dict
      sample: {"sql_synthesizer": 4, "(none)": 7, "sqlsynth_runbooks": 1}
long_running:
  description: Active queries older than O(long_running_seconds), oldest first.
  returned: when reachable
  type: list
  elements: dict
  contains:
    pid:
      description: Backend process id.
      type: int
    usename:
      description: Role of the session.
      type: str
    application_name:
      description: C(application_name) of the session.
      type: str
    client_addr:
      description: Client address, null for Unix sockets.
      type: str
    state:
      description: Session state.
      type: str
    duration_seconds:
      description: Seconds since the query started (since the last state change for idle sessions).
      type: float
    query:
      description: Query text, first 200 characters.
      type: str
  sample:
    - {pid: 4242, usename: sql_user, application_name: sql_synthesizer, client_addr: 127.0.0.1,
       state: active, duration_seconds: 75.3, query: "SELECT pg_sleep(600)"}
idle_in_transaction:
  description: Sessions idle in transaction for longer than O(idle_in_transaction_seconds); same fields as RV(long_running).
  returned: when reachable
  type: list
  elements: dict
ok:
  description: Reachable and no threshold exceeded.
  returned: always
  type: bool
failures:
  description: Short human lines, one per problem found.
  returned: always
  type: list
  elements: str
  sample: ["connections 85/100 above 80%", "3 sessions idle in transaction longer than 300 s"]
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._common import (
    check_non_negative, check_port, check_ratio_option)
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._postgres import (
    HAS_PSYCOPG, PSYCOPG_IMPORT_ERROR, connection_argument_spec, health)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        long_running_seconds=dict(type='float', default=60),
        idle_in_transaction_seconds=dict(type='float', default=300),
        connections_max_ratio=dict(type='float', default=0.8),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib('psycopg (version 3)'), exception=PSYCOPG_IMPORT_ERROR)
    check_port(module, 'login_port')
    check_non_negative(module, 'connect_timeout', 'long_running_seconds', 'idle_in_transaction_seconds')
    check_ratio_option(module, 'connections_max_ratio')
    module.exit_json(changed=False, **health(module.params))


if __name__ == '__main__':
    main()
