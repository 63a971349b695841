#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: redis_health_info
short_description: Read-only health check of a Redis server
version_added: 0.1.0
description:
  - Connects to Redis and reports PING latency, version, memory use against C(maxmemory), evictions,
    keyspace hits and misses, the number of keys in O(db) and connected clients.
  - Judges memory use against O(memory_max_ratio) and returns RV(ok) and short human RV(failures).
  - An unreachable server (refused, timeout, wrong or missing password) is a result, not a task failure;
    RV(reachable) and RV(error) say what happened. Invalid options fail the task.
  - Sends only PING, INFO, DBSIZE and C(CONFIG GET maxmemory-policy). Where CONFIG is forbidden (managed
    Redis, ACL) the policy comes from INFO.
author: sqlsynth.runbooks contributors (@sqlsynth)
extends_documentation_fragment:
  - sqlsynth.runbooks.info_module
  - sqlsynth.runbooks.redis
options:
  memory_max_ratio:
    description:
      - C(used_memory) / C(maxmemory) at or above this ratio counts as a failure. Between 0 and 1.
        Ignored when C(maxmemory) is 0 (no limit).
    type: float
    default: 0.9
seealso:
  - module: sqlsynth.runbooks.postgres_health_info
  - module: community.general.redis_info
'''

EXAMPLES = r'''
- name: Check the cache
  sqlsynth.runbooks.redis_health_info:
    host: "{{ sqlsynth_redis_host }}"
    port: "{{ sqlsynth_redis_port }}"
    db: "{{ sqlsynth_redis_db }}"
    password: "{{ sqlsynth_redis_password }}"
  register: cache_health

- name: Report the cache hit ratio
  ansible.builtin.debug:
    msg: "hit ratio {{ cache_health.hit_ratio }}, {{ cache_health.evictions }} evictions"
'''

RETURN = r'''
reachable:
  description: Whether the server answered PING and INFO with the given credentials.
  returned: always
  type: bool
error:
  description: Why the server could not be checked (no password in it); null when reachable.
  returned: always
  type: str
  sample: "NOAUTH: 127.0.0.1:6379 requires a password and none was given"
error_kind:
  description: Class of RV(error) - refused, timeout, auth, dns, tls, command or other; null when reachable.
  returned: always
  type: str
  sample: auth
ping_ms:
  description: Round trip of one PING in milliseconds.
  returned: when reachable
  type: float
  sample: 0.21
version:
  description: C(redis_version).
  returned: when reachable
  type: str
  sample: 7.0.15
memory:
  description: Memory use.
  returned: when reachable
  type: dict
  contains:
    used_bytes:
      description: C(used_memory).
      type: int
    maxmemory_bytes:
      description: C(maxmemory), 0 when unlimited.
      type: int
    ratio:
      description: used_bytes / maxmemory_bytes; null when maxmemory is 0.
      type: float
    policy:
      description: C(maxmemory-policy).
      type: str
      sample: allkeys-lru
    fragmentation_ratio:
      description: C(mem_fragmentation_ratio).
      type: float
evictions:
  description: C(evicted_keys) since the server started or the last CONFIG RESETSTAT.
  returned: when reachable
  type: int
keyspace_hits:
  description: C(keyspace_hits).
  returned: when reachable
  type: int
keyspace_misses:
  description: C(keyspace_misses).
  returned: when reachable
  type: int
hit_ratio:
  description: hits / (hits + misses); null when there were no lookups.
  returned: when reachable
  type: float
  sample: 0.93
keys:
  description: Number of keys in O(db) (DBSIZE).
  returned: when reachable
  type: int
connected_clients:
  description: C(connected_clients), this check included.
  returned: when reachable
  type: int
ok:
  description: Reachable and memory use below O(memory_max_ratio).
  returned: always
  type: bool
failures:
  description: Short human lines, one per problem found.
  returned: always
  type: list
  elements: str
  sample: ["memory 95% of maxmemory (510656512 of 536870912 bytes, limit 90%)"]
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._common import (
    check_non_negative, check_port, check_ratio_option)
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._redis import (
    HAS_REDIS, REDIS_IMPORT_ERROR, connection_argument_spec, health)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(memory_max_ratio=dict(type='float', default=0.9))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib('redis'), exception=REDIS_IMPORT_ERROR)
    check_port(module, 'port')
    check_non_negative(module, 'db')
    if module.params['socket_timeout'] <= 0:
        module.fail_json(msg='socket_timeout must be greater than 0, got %s' % module.params['socket_timeout'])
    check_ratio_option(module, 'memory_max_ratio')
    module.exit_json(changed=False, **health(module.params))


if __name__ == '__main__':
    main()
