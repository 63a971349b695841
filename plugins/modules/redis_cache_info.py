#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: redis_cache_info
short_description: Report on a Redis cache - memory, hit ratio, evictions, keys by pattern, biggest keys
version_added: 0.1.0
description:
  - Reports memory use against C(maxmemory), the eviction policy, fragmentation, the keyspace hit ratio,
    evictions and the number of keys in O(db).
  - Estimates how many keys match each of O(patterns) from a sample - the first O(sample_size) keys of a
    SCAN, which walks the keyspace in hash order - scaled to the database size. RV(patterns) says whether a
    count is an estimate or exact (exact when the whole database fit into the sample, or with
    O(sample_size=0)).
  - Measures C(MEMORY USAGE) of the sampled keys and returns the O(biggest_keys) largest.
  - Read-only. Sends SCAN (bounded by O(batch_size) per call), MEMORY USAGE, TYPE, PING, INFO, DBSIZE and
    C(CONFIG GET maxmemory-policy); never KEYS.
author: sqlsynth.runbooks contributors (@sqlsynth)
extends_documentation_fragment:
  - sqlsynth.runbooks.info_module
  - sqlsynth.runbooks.redis
options:
  patterns:
    description:
      - Redis glob patterns (as SCAN MATCH reads them) to count keys for. The app writes its keys
        without a prefix, for example V(*|page=*|page_size=*) for result pages and V(tables) for the
        table list.
    type: list
    elements: str
    default: []
  sample_size:
    description:
      - How many keys to sample for the pattern counts and the biggest keys. V(0) scans the whole
        database, which gives exact counts and costs one SCAN pass.
    type: int
    default: 10000
  batch_size:
    description:
      - COUNT of each SCAN call, so the server does bounded work per call. Between 1 and 100000.
    type: int
    default: 1000
  biggest_keys:
    description:
      - How many of the largest sampled keys to return. V(0) skips MEMORY USAGE.
    type: int
    default: 10
seealso:
  - module: sqlsynth.runbooks.redis_purge
  - module: sqlsynth.runbooks.redis_health_info
'''

EXAMPLES = r'''
- name: Report on the cache, with the result pages counted
  sqlsynth.runbooks.redis_cache_info:
    host: "{{ sqlsynth_redis_host }}"
    port: "{{ sqlsynth_redis_port }}"
    db: "{{ sqlsynth_redis_db }}"
    password: "{{ sqlsynth_redis_password }}"
    patterns: ["*|page=*|page_size=*", "tables"]
  register: cache

- name: Show it
  ansible.builtin.debug:
    msg: >-
      {{ cache.db_keys }} keys, hit ratio {{ cache.hit_ratio }},
      {{ cache.patterns[0].estimated_keys }} result pages (estimated from {{ cache.sample_size }} keys)
'''

RETURN = r'''
reachable:
  description: Whether the server answered with the given credentials.
  returned: always
  type: bool
error:
  description: Why the server could not be read (no password in it); null when reachable.
  returned: always
  type: str
memory:
  description: C(used_memory), C(maxmemory), their ratio, C(maxmemory-policy) and C(mem_fragmentation_ratio).
  returned: when reachable
  type: dict
  sample: {used_bytes: 1048576, maxmemory_bytes: 536870912, ratio: 0.002, policy: allkeys-lru, fragmentation_ratio: 1.4}
hit_ratio:
  description: keyspace hits / (hits + misses) since the server started; null when there were no lookups.
  returned: when reachable
  type: float
evictions:
  description: C(evicted_keys) since the server started.
  returned: when reachable
  type: int
db_keys:
  description: Keys in O(db) (DBSIZE).
  returned: when reachable
  type: int
sample_size:
  description: Distinct keys actually sampled.
  returned: when reachable
  type: int
exact:
  description: Whether the whole database was read, so the pattern counts are exact rather than estimates.
  returned: when reachable
  type: bool
patterns:
  description: One entry per O(patterns) entry; a key counts for the first pattern it matches.
  returned: when reachable
  type: list
  elements: dict
  sample: [{pattern: "*|page=*|page_size=*", estimated_keys: 49870, sample_matches: 4987, exact: false,
            sample_keys: ["SELECT count(*) FROM users|page=1|page_size=10"]}]
biggest_keys:
  description: The largest sampled keys by C(MEMORY USAGE), largest first.
  returned: when reachable
  type: list
  elements: dict
  sample: [{key: tables, bytes: 1240, type: string}]
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._common import unreachable
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._redis import (
    HAS_REDIS, REDIS_IMPORT_ERROR, connection_argument_spec, describe_error)
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._redis_maint import (
    cache_info, check_options, raw_client)

if HAS_REDIS:
    from redis import RedisError


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(patterns=dict(type='list', elements='str', default=[]),
                         sample_size=dict(type='int', default=10000),
                         batch_size=dict(type='int', default=1000),
                         biggest_keys=dict(type='int', default=10, no_log=False))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib('redis'), exception=REDIS_IMPORT_ERROR)
    check_options(module, 'sample_size', 'biggest_keys')
    params = module.params
    conn = raw_client(params)
    try:
        result = cache_info(conn, params['patterns'], params['sample_size'] or None, params['batch_size'],
                            params['biggest_keys'])
        result.update(reachable=True, error=None)
    except (RedisError, OSError) as exc:
        result = unreachable(*describe_error(exc, params))
    finally:
        conn.close()
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
