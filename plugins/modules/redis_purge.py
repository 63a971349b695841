#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: redis_purge
short_description: Delete Redis keys by pattern without blocking the server, or flush one named database
version_added: 0.1.0
description:
  - Deletes every key matching any of O(patterns) with SCAN (COUNT O(batch_size)) and pipelined UNLINK.
    Each round trip carries one SCAN call and the UNLINK of the keys the previous call found, so the
    server never does more than one batch of work at a time and other clients are served in between.
    Never sends KEYS. UNLINK frees large values in the background.
  - With O(flush_db), runs C(FLUSHDB ASYNC) on that database instead - what the app's own cache clear
    does. The database must be named explicitly; there is no default and no FLUSHALL.
  - This module acts; it is not idempotent in the sense of doing nothing on a second run - it deletes
    whatever matches at that moment (a live app writes its cache back). It reports C(changed) only when
    keys were deleted.
  - With O(verify) (the default) it reads the keyspace once more after the purge and reports matching
    keys left and whether every key outside the patterns is still there (compared by fingerprint with
    the keys seen during the purge pass). That pass costs one more SCAN of the database.
author: sqlsynth.runbooks contributors (@sqlsynth)
extends_documentation_fragment:
  - sqlsynth.runbooks.redis
attributes:
  check_mode:
    support: full
    description:
      - Deletes nothing. Returns each pattern with the number of keys it would delete, estimated from a
        SCAN sample of O(sample_size) keys (exact when the database fits into the sample), and example
        keys; with O(flush_db), the number of keys in that database.
  diff_mode:
    support: none
    description: The deleted keys are counted, not listed.
options:
  patterns:
    description:
      - Redis glob patterns of the keys to delete (V(*) V(?) V([abc]) V([^a-z]), backslash escapes).
        The app's keys have no prefix; its result pages are V(*|page=*|page_size=*).
      - Mutually exclusive with O(flush_db).
    type: list
    elements: str
  flush_db:
    description:
      - Number of the database to empty with C(FLUSHDB ASYNC). O(db) is ignored then.
      - Mutually exclusive with O(patterns).
    type: int
  batch_size:
    description:
      - COUNT of each SCAN call (and so the most keys one UNLINK deletes). Bounds the work per round trip.
        Between 1 and 100000. The default keeps each call short (a few milliseconds at most on a busy host);
        larger batches delete faster but block the server longer per call (see docs/benchmarks.md).
    type: int
    default: 200
  pause_ms:
    description:
      - Milliseconds to sleep between round trips, to leave the server even more room on a busy instance.
    type: int
    default: 0
  verify:
    description:
      - After the purge, SCAN the database again and report matching keys left and keys outside the
        patterns that went missing. Costs one more pass; keeps one 64-bit id per non-matching key in memory.
    type: bool
    default: true
  sample_size:
    description:
      - Keys sampled in check mode to estimate the count per pattern.
    type: int
    default: 10000
  sample_keys:
    description:
      - Example keys returned per pattern in check mode.
    type: int
    default: 5
seealso:
  - module: sqlsynth.runbooks.redis_cache_info
  - module: community.general.redis_data
'''

EXAMPLES = r'''
- name: Purge cached result pages (preview first with --check)
  sqlsynth.runbooks.redis_purge:
    host: "{{ sqlsynth_redis_host }}"
    port: "{{ sqlsynth_redis_port }}"
    db: "{{ sqlsynth_redis_db }}"
    password: "{{ sqlsynth_redis_password }}"
    patterns: ["*|page=*|page_size=*"]
    batch_size: 1000
  register: purge

- name: Empty the app's cache database, as its own cache clear does
  sqlsynth.runbooks.redis_purge:
    host: "{{ sqlsynth_redis_host }}"
    password: "{{ sqlsynth_redis_password }}"
    flush_db: 0
'''

RETURN = r'''
mode:
  description: V(patterns) or V(flush).
  returned: always
  type: str
db:
  description: The database acted on.
  returned: always
  type: int
deleted:
  description: Keys deleted (the sum of UNLINK replies, or DBSIZE before FLUSHDB); 0 in check mode.
  returned: always
  type: int
would_delete:
  description: In check mode, the estimated number of keys a real run would delete.
  returned: in check mode
  type: int
batches:
  description: UNLINK round trips.
  returned: when patterns were purged
  type: int
elapsed_seconds:
  description: Wall time of the purge (without the verification pass).
  returned: when keys were purged
  type: float
keys_per_second:
  description: RV(deleted) / RV(elapsed_seconds).
  returned: when patterns were purged
  type: int
patterns:
  description:
    - One entry per pattern. After a run with O(verify) - V(matched) keys seen during the pass and
      V(remaining) found by the verification pass. In check mode - V(estimated_keys), V(sample_matches),
      V(sample_keys) and V(exact).
  returned: with O(patterns)
  type: list
  elements: dict
  sample: [{pattern: "*|page=*|page_size=*", matched: 5120, remaining: 0}]
sample_size:
  description: In check mode, distinct keys sampled for the estimates.
  returned: in check mode with O(patterns)
  type: int
verification:
  description: Result of the verification pass.
  returned: with O(verify), when not in check mode
  type: dict
  contains:
    remaining:
      description: Keys matching the patterns found after the purge (written since, by a live app).
      type: int
    other_keys_before:
      description: Distinct keys outside the patterns seen during the purge pass.
      type: int
    other_keys_after:
      description: Distinct keys outside the patterns seen by the verification pass.
      type: int
    other_keys_missing:
      description: Keys outside the patterns seen before and gone after (expired or deleted by someone else).
      type: int
    other_keys_added:
      description: Keys outside the patterns written since the purge pass.
      type: int
    others_untouched:
      description: Whether no key outside the patterns went missing.
      type: bool
    db_keys:
      description: DBSIZE after the purge.
      type: int
flushed:
  description: Whether FLUSHDB ASYNC was sent.
  returned: with O(flush_db)
  type: bool
db_keys_before:
  description: DBSIZE of O(flush_db) before the flush.
  returned: with O(flush_db)
  type: int
command:
  description: The command a flush sends (V(FLUSHDB ASYNC)).
  returned: with O(flush_db)
  type: str
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._redis import (
    HAS_REDIS, REDIS_IMPORT_ERROR, connection_argument_spec, describe_error)
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._redis_maint import (
    DEFAULT_BATCH, check_options, flush, purge, raw_client, sample)

if HAS_REDIS:
    from redis import RedisError


def run(module, conn):
    params = module.params
    if params['flush_db'] is not None:
        result = flush(conn, module.check_mode)
        result.update(mode='flush', db=params['flush_db'], deleted=result.get('deleted', 0))
        if module.check_mode:
            result['would_delete'] = result['db_keys_before']
        return result
    patterns = params['patterns']
    if module.check_mode:
        preview = sample(conn, patterns, params['sample_size'], params['batch_size'], params['sample_keys'])
        return dict(mode='patterns', db=params['db'], deleted=0, patterns=preview['patterns'],
                    sample_size=preview['sample_size'], db_keys=preview['db_keys'],
                    would_delete=sum(p['estimated_keys'] for p in preview['patterns']))
    result = purge(conn, patterns, params['batch_size'], params['pause_ms'] / 1000.0, params['verify'])
    result.update(mode='patterns', db=params['db'])
    return result


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(patterns=dict(type='list', elements='str'),
                         flush_db=dict(type='int'),
                         batch_size=dict(type='int', default=DEFAULT_BATCH),
                         pause_ms=dict(type='int', default=0),
                         verify=dict(type='bool', default=True),
                         sample_size=dict(type='int', default=10000),
                         sample_keys=dict(type='int', default=5, no_log=False))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[('patterns', 'flush_db')],
                           required_one_of=[('patterns', 'flush_db')])
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib('redis'), exception=REDIS_IMPORT_ERROR)
    check_options(module, 'flush_db', 'pause_ms', 'sample_keys')
    params = module.params
    if params['patterns'] is not None and not params['patterns']:
        module.fail_json(msg='patterns is empty: name at least one pattern, or the database to flush with flush_db')
    if params['sample_size'] < 1:
        module.fail_json(msg='sample_size must be at least 1, got %s' % params['sample_size'])
    if params['flush_db'] is not None:
        params = dict(params, db=params['flush_db'])
    conn = raw_client(params)
    try:
        result = run(module, conn)
    except (RedisError, OSError) as exc:
        error, kind = describe_error(exc, params)
        module.fail_json(msg='redis_purge failed: %s' % error, error_kind=kind)
    finally:
        conn.close()
    module.exit_json(changed=result['deleted'] > 0 or result.get('would_delete', 0) > 0, **result)


if __name__ == '__main__':
    main()
