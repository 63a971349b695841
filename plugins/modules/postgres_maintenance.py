#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: postgres_maintenance
short_description: VACUUM, ANALYZE and REINDEX the PostgreSQL tables that need it, in parallel, never waiting on locks
version_added: 0.1.0
author: sqlsynth.runbooks contributors (@sqlsynth)
description:
  - Selects tables by need from C(pg_stat_user_tables) and C(pg_class) (dead-tuple count and ratio,
    time since the last (auto)vacuum and (auto)analyze, transaction-id age) and indexes by need
    (invalid indexes, estimated btree bloat), then runs C(VACUUM (ANALYZE)), C(ANALYZE),
    C(REINDEX INDEX CONCURRENTLY) and C(DROP INDEX CONCURRENTLY) of the invalid C(_ccnew) leftovers
    of an interrupted concurrent reindex, up to O(workers) sessions at once (one table per session).
  - Every session runs under O(lock_timeout) and O(statement_timeout). A table whose lock cannot be had
    within O(lock_timeout) is skipped and reported in RV(skipped_tables), never waited on; the rest proceeds.
    A failed C(REINDEX INDEX CONCURRENTLY) has its invalid C(_ccnew) copy dropped at once.
  - Session hygiene - lists sessions idle in transaction longer than O(idle_in_transaction_seconds) and
    queries running longer than O(long_running_seconds); terminates the idle ones only when
    O(terminate_idle=true), before the VACUUMs (they hold back the horizon VACUUM may clean up to).
  - Disk and WAL - reports the database size, the size of C(pg_wal) (when the role may call
    C(pg_ls_waldir)) and the free space of the data directory (when the server is on this host).
  - Before anything irreversible (dropping or rebuilding invalid indexes, terminating sessions) it
    writes a C(pg_dump) custom-format backup to O(backup_dir) and keeps the O(backup_keep) newest.
  - This module acts. VACUUM and ANALYZE are not idempotent operations; the module reports
    C(changed=true) whenever it ran a statement. A second run finds nothing due and changes nothing.
extends_documentation_fragment:
  - sqlsynth.runbooks.postgres
attributes:
  check_mode:
    description: Can run in check mode and report what it would do without changing the target.
    support: full
    details: Returns the exact SQL statements it would run, per table (RV(plan)), and whether a backup
      would be taken; changes nothing (the inspection runs in a read-only session).
  diff_mode:
    description: Would return details on what has changed.
    support: none
options:
  actions:
    description:
      - What the module may do. V(vacuum) - C(VACUUM) (with C(ANALYZE) when V(analyze) is also listed,
        C(FREEZE) when the transaction-id age is the reason); V(analyze) - C(ANALYZE) of tables only due
        for analyze; V(reindex) - C(REINDEX INDEX CONCURRENTLY) of bloated btree indexes;
        V(invalid_indexes) - drop C(_ccnew)/C(_ccold) leftovers and rebuild other invalid indexes.
    type: list
    elements: str
    choices: [vacuum, analyze, reindex, invalid_indexes]
    default: [vacuum, analyze, reindex, invalid_indexes]
  schemas:
    description: Schemas to look at; empty means every non-system schema.
    type: list
    elements: str
    default: []
  exclude_tables:
    description: Tables never touched, as C(schema.table) or bare table names.
    type: list
    elements: str
    default: []
  dead_tuples_min:
    description: A table needs VACUUM when it has at least this many dead tuples and O(dead_ratio_min) is reached.
    type: int
    default: 1000
  dead_ratio_min:
    description: Dead tuples / (live + dead) from which a table needs VACUUM (with O(dead_tuples_min)).
    type: float
    default: 0.2
  xid_age_max:
    description: Tables whose C(relfrozenxid) age reaches this get C(VACUUM (FREEZE, ANALYZE)).
    type: int
    default: 150000000
  vacuum_max_age_hours:
    description: When set, tables not vacuumed (manually or by autovacuum) for this many hours, or never, need VACUUM.
    type: float
  analyze_max_age_hours:
    description: When set, tables not analyzed for this many hours, or never, need ANALYZE.
    type: float
  index_bloat_ratio_min:
    description:
      - Estimated bloat (1 - expected size / actual size) from which a btree index is rebuilt.
      - The expected size is that of a freshly built btree (leaf pages 90% full) holding C(pg_class.reltuples)
        entries; the key width comes from the column types, or from C(pg_stats) for variable-width columns and
        expressions. An index with a variable-width key that has no statistics yet (table never analyzed) gets
        no estimate and is not rebuilt for bloat. Sizes and counts are those of the last VACUUM, ANALYZE or REINDEX.
    type: float
    default: 0.5
  index_bloat_min_bytes:
    description: Smaller indexes are never rebuilt for bloat (their estimate is noise).
    type: int
    default: 10485760
  workers:
    description: Sessions working in parallel (one table each at a time).
    type: int
    default: 2
  lock_timeout:
    description: Seconds any statement may wait for a lock; then the table is skipped.
    type: float
    default: 5
  statement_timeout:
    description: Seconds any statement may run; then it is cancelled and the table reported as skipped.
    type: float
    default: 3600
  idle_in_transaction_seconds:
    description: Sessions idle in transaction for longer are listed (and terminated with O(terminate_idle)).
    type: float
    default: 300
  terminate_idle:
    description: Terminate the sessions idle in transaction past O(idle_in_transaction_seconds). Destructive.
    type: bool
    default: false
  long_running_seconds:
    description: Active queries running longer are reported (never terminated).
    type: float
    default: 300
  backup:
    description:
      - V(auto) - C(pg_dump) before an irreversible step (invalid indexes, terminating sessions);
        V(always) - before any action; V(never) - no backup.
    type: str
    choices: [auto, always, never]
    default: auto
  backup_dir:
    description: Directory on the host running the module for the C(pg_dump) files (created, mode 0700).
    type: path
    default: /var/backups/sqlsynth/postgres
  backup_keep:
    description: How many of the newest C(<db>-<time>.dump) files to keep in O(backup_dir); 0 keeps all.
    type: int
    default: 7
  pg_dump_path:
    description: C(pg_dump) to use (its major version must be at least the server's); looked up on PATH by default.
    type: path
notes:
  - The login role must own the tables (or be a superuser) to VACUUM and REINDEX them; tables it does not own are
    not selected. Seeing other roles' sessions and C(pg_wal) needs C(pg_monitor).
seealso:
  - module: sqlsynth.runbooks.postgres_health_info
  - name: Routine vacuuming
    description: PostgreSQL documentation.
    link: https://www.postgresql.org/docs/current/routine-vacuuming.html
'''

EXAMPLES = r'''
- name: Preview the maintenance (exact SQL per table)
  sqlsynth.runbooks.postgres_maintenance:
    login_db: sql_synthesizer
    login_user: sql_user
    login_password: "{{ sqlsynth_db_password }}"
  check_mode: true
  register: preview

- name: Vacuum what needs it with 4 sessions, never waiting more than 2 s for a lock
  sqlsynth.runbooks.postgres_maintenance:
    login_db: sql_synthesizer
    login_user: sql_user
    login_password: "{{ sqlsynth_db_password }}"
    workers: 4
    lock_timeout: 2
    actions: [vacuum, analyze]
'''

RETURN = r'''
plan:
  description: Tables with something due, the reasons and the exact statements (run, or to be run in check mode).
  returned: always
  type: list
  elements: dict
  sample:
    - schema: public
      table: query_history
      reasons: ["dead tuples 52000 (34%)"]
      statements: ['VACUUM (ANALYZE) "public"."query_history"']
tables:
  description: Per table - status (done, skipped, failed), before and after (n_live_tup, n_dead_tup,
    table_bytes, index_bytes), statements with durations, skip_reason, error. Empty in check mode.
  returned: always
  type: list
  elements: dict
statements:
  description: Every statement run, with C(table), C(sql), C(duration_seconds) and C(error) when it failed.
  returned: always
  type: list
  elements: dict
  sample: [{table: public.query_history, sql: 'VACUUM (ANALYZE) "public"."query_history"', duration_seconds: 0.41}]
skipped_tables:
  description: Tables given up, with the reason (lock not available within lock_timeout, statement_timeout).
  returned: always
  type: list
  elements: dict
  sample: [{table: public.sessions, reason: "lock not available within lock_timeout (2 s)"}]
failed_tables:
  description: Tables whose statements failed for another reason, with the error.
  returned: always
  type: list
  elements: dict
indexes:
  description: Invalid indexes and indexes with estimated bloat at or above O(index_bloat_ratio_min), each with
    C(schema), C(table), C(index), C(valid), C(bytes) (C(pg_class.relpages) x 8 KiB) and C(bloat_ratio)
    (null for an invalid index).
  returned: always
  type: list
  elements: dict
candidates:
  description: Tables inspected (owned by the login role, in O(schemas), not excluded).
  returned: always
  type: int
sessions:
  description: C(idle_in_transaction) and C(long_running) sessions (fields as in postgres_health_info),
    C(terminated) pids and C(terminate_statements).
  returned: always
  type: dict
disk:
  description: C(database_bytes), C(wal_bytes), C(data_directory), C(free_bytes), C(free_ratio) (null when
    not readable or not local) and C(notes) saying why.
  returned: always
  type: dict
backup:
  description: The backup taken (C(path), C(bytes), C(seconds), C(removed) old dumps); in check mode C(planned)
    and C(dir); null when none was needed.
  returned: always
  type: dict
elapsed_seconds:
  description: Wall time of the module's own work.
  returned: always
  type: float
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._common import (
    check_non_negative, check_port, first_line, scrub)
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._pg_maint import ACTIONS, maintain
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._postgres import (
    HAS_PSYCOPG, PSYCOPG_IMPORT_ERROR, connection_argument_spec, describe_connect_error)

if HAS_PSYCOPG:
    import psycopg


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        actions=dict(type='list', elements='str', choices=list(ACTIONS), default=list(ACTIONS)),
        schemas=dict(type='list', elements='str', default=[]),
        exclude_tables=dict(type='list', elements='str', default=[]),
        dead_tuples_min=dict(type='int', default=1000),
        dead_ratio_min=dict(type='float', default=0.2),
        xid_age_max=dict(type='int', default=150000000),
        vacuum_max_age_hours=dict(type='float'),
        analyze_max_age_hours=dict(type='float'),
        index_bloat_ratio_min=dict(type='float', default=0.5),
        index_bloat_min_bytes=dict(type='int', default=10485760),
        workers=dict(type='int', default=2),
        lock_timeout=dict(type='float', default=5),
        statement_timeout=dict(type='float', default=3600),
        idle_in_transaction_seconds=dict(type='float', default=300),
        terminate_idle=dict(type='bool', default=False),
        long_running_seconds=dict(type='float', default=300),
        backup=dict(type='str', choices=['auto', 'always', 'never'], default='auto'),
        backup_dir=dict(type='path', default='/var/backups/sqlsynth/postgres'),
        backup_keep=dict(type='int', default=7),
        pg_dump_path=dict(type='path'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if not HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib('psycopg (version 3)'), exception=PSYCOPG_IMPORT_ERROR)
    check_port(module, 'login_port')
    check_non_negative(module, 'connect_timeout', 'dead_tuples_min', 'xid_age_max', 'vacuum_max_age_hours',
                       'analyze_max_age_hours', 'index_bloat_min_bytes', 'idle_in_transaction_seconds',
                       'long_running_seconds', 'backup_keep')
    for name in ('dead_ratio_min', 'index_bloat_ratio_min'):
        if not 0 <= params[name] <= 1:
            module.fail_json(msg='%s must be between 0 and 1, got %s' % (name, params[name]))
    for name in ('workers', 'lock_timeout', 'statement_timeout'):
        if params[name] <= 0:
            module.fail_json(msg='%s must be greater than 0, got %s' % (name, params[name]))
    pg_dump = None
    if params['backup'] != 'never' and not module.check_mode:
        pg_dump = params['pg_dump_path'] or module.get_bin_path('pg_dump', opt_dirs=['/usr/lib/postgresql/15/bin'])
        if not pg_dump and params['backup'] == 'always':
            module.fail_json(msg='pg_dump not found: install the PostgreSQL client or set pg_dump_path')
    secrets = [params.get('login_password')]
    try:
        result = maintain(params, module.check_mode, pg_dump=pg_dump)
    except psycopg.OperationalError as exc:
        text, kind = describe_connect_error(exc, params)
        module.fail_json(msg='PostgreSQL maintenance could not start: %s' % text, error_kind=kind)
    except (psycopg.Error, RuntimeError, OSError) as exc:
        module.fail_json(msg='PostgreSQL maintenance failed: %s' % scrub(first_line(exc), secrets))
    if result['failed_tables']:
        module.fail_json(msg='%d table(s) failed: %s' % (len(result['failed_tables']), '; '.join(
            '%s: %s' % (f['table'], f['error']) for f in result['failed_tables'])), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
