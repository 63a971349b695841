#!/usr/bin/python
# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: disk_usage_info
short_description: Disk usage of log directories and the rotation plan of a logrotate policy
version_added: 0.1.0
author: sqlsynth.runbooks contributors (@sqlsynth)
description:
  - Reports, for each directory in O(paths), the bytes of the files below it and the free and total
    bytes of its filesystem.
  - For each entry of O(logs), lists the live log files and their rotated files. A rotated file
    belongs to a log only when its name is the log's name plus the C(dateext) suffix described by
    the entry's O(logs[].dateformat) (plus the compression extension), so other files in the same
    directory (other logs, C(.1) backups of other tools) are never counted or planned for removal.
  - With O(logrotate_conf), asks C(logrotate -d) (debug mode, which changes nothing) which logs are
    due, and plans what a rotation would do - the files that would rotate, be compressed and be
    removed (the oldest beyond O(logs[].rotate)) - with an estimate of the bytes it frees (the size
    of the files compressed or removed).
  - Changes nothing; it is the check-mode preview of the log_rotation runbook.
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: The module only reads; it runs the same in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
options:
  paths:
    description: Directories to measure (the log partition is the filesystem of each).
    type: list
    elements: path
    required: true
  logs:
    description: The policy entries whose files to inventory and plan.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the policy entry.
        type: str
        required: true
      paths:
        description: Absolute paths of the live log files of the entry.
        type: list
        elements: path
        required: true
      rotate:
        description: How many rotated files logrotate keeps.
        type: int
        default: 10
      dateformat:
        description: The entry's logrotate C(dateformat) (only C(%Y %m %d %H %M %S %V %s)).
        type: str
        default: "-%Y%m%d-%H%M%S"
      compress:
        description: Whether rotated files are compressed.
        type: bool
        default: true
      delaycompress:
        description: Whether the newest rotated file stays uncompressed until the next rotation.
        type: bool
        default: true
      compressext:
        description: Extension of compressed rotated files.
        type: str
        default: .gz
  logrotate_conf:
    description:
      - A logrotate configuration file; when set, C(logrotate -d) decides which logs are due.
      - Without it no log is considered due and only the inventory is returned.
    type: path
  state_file:
    description: The logrotate state file (read only, in debug mode).
    type: path
    default: /var/lib/logrotate/status
  force:
    description: Plan a forced rotation (C(logrotate -f)) instead of the size and time triggers.
    type: bool
    default: false
  logrotate_command:
    description: The logrotate executable.
    type: str
    default: logrotate
notes:
  - Needs logrotate 3.9 or later on the host for C(dateformat) with hours, minutes and seconds.
"""

EXAMPLES = r"""
- name: Plan a forced rotation and measure the log partition
  sqlsynth.runbooks.disk_usage_info:
    paths: [/var/log/sql_synthesizer]
    logs:
      - name: audit
        paths: [/var/log/sql_synthesizer/audit.log]
        rotate: 10
    logrotate_conf: /etc/logrotate.d/sqlsynth
    force: true
  register: usage

- name: Show what would be removed
  ansible.builtin.debug:
    var: usage.plan.remove
"""

RETURN = r"""
dirs:
  description: Per directory, bytes and file count below it and its filesystem's free and total bytes.
  type: list
  elements: dict
  returned: always
  sample: [{path: /var/log/sql_synthesizer, bytes: 10240, files: 3, fs_free_bytes: 84302868480,
            fs_total_bytes: 270553174016, fs_free_percent: 31.16}]
fs_free_bytes:
  description: The smallest free byte count over the filesystems of O(paths).
  type: int
  returned: always
fs_free_percent:
  description: The smallest free percentage over the filesystems of O(paths).
  type: float
  returned: always
logs:
  description: Per policy entry name, one item per live log path with its live file, rotated files and plan.
  type: dict
  returned: always
  sample: {audit: [{path: /var/log/sql_synthesizer/audit.log, live: {path: /var/log/sql_synthesizer/audit.log,
           size: 400, mtime: 1764406800}, rotated: [], due: true, compress: [], remove: []}]}
plan:
  description: What a rotation would do now.
  type: dict
  returned: always
  contains:
    rotate:
      description: Live log files that would rotate.
      type: list
      elements: str
    compress:
      description: Rotated files that would be compressed.
      type: list
      elements: str
    remove:
      description: Rotated files that would be removed (beyond the retention count).
      type: list
      elements: str
    freeable_bytes:
      description: Estimate of the bytes freed (size of the files compressed or removed).
      type: int
logrotate_cmd:
  description: The logrotate debug command that was run (empty without O(logrotate_conf)).
  type: list
  elements: str
  returned: always
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._disk import (
    dateext_regex, dir_usage, due_logs, plan_log, summarize)

LOG_SPEC = dict(
    name=dict(type='str', required=True),
    paths=dict(type='list', elements='path', required=True),
    rotate=dict(type='int', default=10),
    dateformat=dict(type='str', default='-%Y%m%d-%H%M%S'),
    compress=dict(type='bool', default=True),
    delaycompress=dict(type='bool', default=True),
    compressext=dict(type='str', default='.gz'),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type='list', elements='path', required=True),
            logs=dict(type='list', elements='dict', default=[], options=LOG_SPEC),
            logrotate_conf=dict(type='path'),
            state_file=dict(type='path', default='/var/lib/logrotate/status'),
            force=dict(type='bool', default=False),
            logrotate_command=dict(type='str', default='logrotate'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    missing = [p for p in params['paths'] if not os.path.isdir(p)]
    if missing:
        module.fail_json(msg='not a directory: %s' % ', '.join(missing))
    for log in params['logs']:
        try:
            dateext_regex(log['dateformat'])
        except ValueError as exc:
            module.fail_json(msg='policy entry %s: %s' % (log['name'], exc))
        relative = [p for p in log['paths'] if not os.path.isabs(p)]
        if relative:
            module.fail_json(msg='policy entry %s: log paths must be absolute: %s' % (log['name'], ', '.join(relative)))

    due, cmd = set(), []
    if params['logrotate_conf']:
        if not os.path.isfile(params['logrotate_conf']):
            module.fail_json(msg='logrotate_conf %s does not exist' % params['logrotate_conf'])
        cmd = [module.get_bin_path(params['logrotate_command'], required=True), '-d']
        cmd += ['-f'] if params['force'] else []
        cmd += ['-s', params['state_file'], params['logrotate_conf']]
        rc, out, err = module.run_command(cmd)
        errors = [line for line in (out + err).splitlines() if line.startswith('error:')]
        if rc != 0 or errors:
            module.fail_json(msg='logrotate -d rejects %s: %s' % (params['logrotate_conf'], '; '.join(errors) or err),
                             rc=rc, logrotate_cmd=cmd)
        due = due_logs(out + '\n' + err)

    logs, entries = {}, []
    for log in params['logs']:
        logs[log['name']] = [plan_log(path, path in due, log['rotate'], log['dateformat'], log['compress'],
                                      log['delaycompress'], log['compressext']) for path in log['paths']]
        entries.extend(logs[log['name']])
    dirs = [dir_usage(p) for p in params['paths']]
    module.exit_json(changed=False, dirs=dirs, logs=logs, plan=summarize(entries), logrotate_cmd=cmd,
                     fs_free_bytes=min(d['fs_free_bytes'] for d in dirs) if dirs else 0,
                     fs_free_percent=min(d['fs_free_percent'] for d in dirs) if dirs else 0.0)


if __name__ == '__main__':
    main()
