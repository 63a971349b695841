#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: evidence_preserve
short_description: Preserve files as incident evidence with SHA-256 checksums, never overwriting earlier evidence
version_added: 0.1.0
description:
  - Creates the new directory O(dest)/O(label)/ and copies every file of O(sources) into it under its base name,
    hashing the bytes while they are copied (SHA-256, streamed, so large logs are read once and never held in
    memory). A file that is still being written is preserved as far as it was read, and its checksum and size
    describe exactly the copy.
  - Writes C(SHA256SUMS) in the format C(sha256sum -c SHA256SUMS) checks when run in that directory, and
    C(SOURCES), a tab-separated table with a header line of the original absolute path, bytes copied,
    modification time of the source (UTC, ISO 8601) and SHA-256 of each file.
  - The copies and both lists end with mode C(0400), the directory with C(0500). O(dest) is created (C(0700))
    when missing.
  - Fails when O(dest)/O(label) already exists - evidence is never overwritten or added to; use a new label
    (such as the run id). Two sources with the same base name are stored as C(name), C(name-2) ...
  - A source that does not exist is listed in RV(missing) and the others are preserved; when none exists the
    task fails and nothing is created. A source that exists but is a directory or unreadable fails the task
    before anything is created. When copying fails midway, the partial directory is removed.
author: sqlsynth.runbooks contributors (@sqlsynth)
attributes:
  check_mode:
    support: full
    description: Reports what would be copied (current sizes, no checksums) and creates nothing.
  diff_mode:
    support: none
    description: Only new files are created; there is no previous state to compare.
  idempotent:
    support: none
    description: Each run creates a new evidence directory; a second run with the same label fails by design.
options:
  sources:
    description: Files to preserve (logs, configuration, dumps). Symbolic links are followed.
    type: list
    elements: path
    required: true
  dest:
    description: Directory under which the evidence directory is created.
    type: path
    required: true
  label:
    description: Name of the evidence directory, for example the run id. A single directory name.
    type: str
    required: true
seealso:
  - module: ansible.builtin.copy
'''

EXAMPLES = r'''
- name: Preserve the logs of the incident before anything is restarted
  sqlsynth.runbooks.evidence_preserve:
    sources:
      - /opt/sqlsynth-lab/logs/app.log
      - /opt/sqlsynth-lab/logs/audit.log
      - /opt/sqlsynth-lab/logs/nginx_access.log
    dest: /var/lib/sqlsynth/evidence
    label: "incident-{{ now(utc=true, fmt='%Y%m%dT%H%M%SZ') }}"
  register: evidence

- name: Show where the evidence is
  ansible.builtin.debug:
    msg: "{{ evidence.files | length }} files in {{ evidence.dir }}; missing: {{ evidence.missing }}"
'''

RETURN = r'''
dir:
  description: The evidence directory (created, or that would be created in check mode).
  returned: always
  type: str
  sample: /var/lib/sqlsynth/evidence/incident-20261205T184308Z
files:
  description: One entry per preserved file, in the order of O(sources).
  returned: always
  type: list
  elements: dict
  contains:
    source:
      description: The path as given in O(sources).
      type: str
      sample: /opt/sqlsynth-lab/logs/audit.log
    dest:
      description: Path of the copy.
      type: str
      sample: /var/lib/sqlsynth/evidence/incident-20261205T184308Z/audit.log
    sha256:
      description: SHA-256 of the copy (hex); null in check mode.
      type: str
      sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    bytes:
      description: Bytes copied (in check mode, the current size of the source).
      type: int
      sample: 18342
missing:
  description: Sources that did not exist.
  returned: always
  type: list
  elements: str
  sample: [/opt/sqlsynth-lab/logs/nginx_access.log]
sums_file:
  description: Path of C(SHA256SUMS).
  returned: always
  type: str
sources_file:
  description: Path of C(SOURCES).
  returned: always
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._evidence import EvidenceError, preserve


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sources=dict(type='list', elements='path', required=True),
            dest=dict(type='path', required=True),
            label=dict(type='str', required=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = preserve(params['sources'], params['dest'], params['label'], check_mode=module.check_mode)
    except EvidenceError as exc:
        module.fail_json(msg=str(exc))
    except (IOError, OSError) as exc:
        module.fail_json(msg='cannot preserve evidence in %s: %s' % (params['dest'], getattr(exc, 'strerror', None) or exc))
    for path in result['missing']:
        module.warn('evidence source %s does not exist; the other sources were preserved' % path)
    module.exit_json(changed=True, **result)


if __name__ == '__main__':
    main()
