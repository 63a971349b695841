#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: http_probe_info
short_description: Probe many HTTP(S) endpoints concurrently in one task
version_added: 0.1.0
description:
  - Sends one request to each of O(targets) from a pool of threads on the host that runs the module
    (the standard library's C(http.client) and C(ssl); no C(ansible.builtin.uri) loop), and judges each
    answer by its status, its JSON body, its latency and, for C(https), its certificate.
  - For C(https) targets the served certificate is always reported (subject, SANs, issuer, expiry), also
    when verification fails; it is then read through a second handshake that verifies nothing, and the
    failure says why verification failed (expired, wrong name, unknown CA).
  - Network trouble (refused, timeout, TLS) is a failed probe, not a failed task. Invalid options fail
    the task with a message that names the target.
  - Only sends the requests described; whether that changes anything on the server (a C(POST)) is up to
    the endpoint. The module itself changes nothing and reports C(changed=false).
author: sqlsynth.runbooks contributors (@sqlsynth)
attributes:
  check_mode:
    support: full
    description: The requests are sent in check mode too; the module only reads.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
extends_documentation_fragment:
  - sqlsynth.runbooks.tls
options:
  targets:
    description:
      - The endpoints to probe. Results come back in the same order.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Label of the probe in the results. Defaults to the URL.
        type: str
      url:
        description: C(http://) or C(https://) URL.
        type: str
        required: true
      method:
        description: HTTP method.
        type: str
        choices: [GET, POST]
        default: GET
      body:
        description: Any JSON-able value, sent as a JSON document with C(Content-Type application/json).
        type: raw
      status:
        description: Status codes that count as success.
        type: list
        elements: int
        default: [200]
      json_expect:
        description:
          - Expected values in the JSON body, by dotted path (list items by index, C(items.0.id)).
          - 'A path ending in C(.*) means every value under it must equal the expected value, for example
            C({"status": "healthy", "components.*": true}).'
          - Booleans only equal booleans (C(1) is not C(true)).
        type: dict
      latency_budget_ms:
        description: A slower answer (whole request, body included) is a failure.
        type: float
      use_api_key:
        description: Send O(api_key) in the O(api_key_header) header.
        type: bool
        default: false
      source_address:
        description:
          - Local IP address (IPv4 or IPv6) to bind the client socket to, so the server sees the request coming
            from it, for example V(127.0.0.66) to check that nginx denies a blocked client. The port is chosen by
            the system.
          - An address the host does not have is a failed probe whose failure starts with
            C(cannot bind source address), not a failed task.
          - Defaults to the address the system picks.
        type: str
      header_expect:
        description:
          - 'Response headers that must be present, by name (case-insensitive), each with a text its value must
            contain (an empty text only requires the header), for example C({"Strict-Transport-Security": "max-age="}).'
          - Header values are not returned (they may carry cookies); a mismatch is a failure naming the header.
        type: dict
  api_key:
    description: API key sent to the targets that set O(targets[].use_api_key). Never returned or logged.
    type: str
  api_key_header:
    description: Header that carries O(api_key).
    type: str
    default: X-API-Key
  min_cert_days:
    description: A certificate with fewer days left fails the probe.
    type: int
  concurrency:
    description: Number of targets probed at the same time.
    type: int
    default: 32
requirements:
  - cryptography (only for C(https) targets, to describe the certificate)
seealso:
  - module: sqlsynth.runbooks.metrics_info
  - module: ansible.builtin.uri
'''

EXAMPLES = r'''
- name: Probe the app through the proxy, directly, and with a synthetic query
  sqlsynth.runbooks.http_probe_info:
    targets:
      - name: health
        url: https://127.0.0.1:8443/health
        status: [200, 503]
        json_expect: {"status": "healthy", "components.*": true}
        latency_budget_ms: 500
      - name: health_direct
        url: http://127.0.0.1:5000/health
      - name: synthetic_query
        url: https://127.0.0.1:8443/api/query
        method: POST
        body: {question: how many users are there}
        use_api_key: true
      - name: blocked_client_is_denied
        url: https://127.0.0.1:8443/health
        source_address: 127.0.0.66
        status: [403]
    api_key: "{{ sqlsynth_api_key }}"
    server_name: sqlsynth.lab
    ca_path: /opt/sqlsynth-lab/ca/ca.crt
    min_cert_days: 14
  register: probes

- name: Fail when a probe failed
  ansible.builtin.assert:
    that: probes.summary.failed == 0
    fail_msg: "{{ probes.probes | rejectattr('ok') | map(attribute='failures') | flatten }}"
'''

RETURN = r'''
probes:
  description: One result per target, in the order of O(targets).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the target.
      type: str
      sample: health
    url:
      description: URL probed.
      type: str
    ok:
      description: No failure.
      type: bool
    status:
      description: HTTP status; null when no response came.
      type: int
      sample: 503
    elapsed_ms:
      description: Time of the request, from connecting to the end of the body.
      type: float
      sample: 12.4
    source_address:
      description: The local address the request was sent from, when O(targets[].source_address) is set.
      type: str
      returned: when O(targets[].source_address) is set
      sample: 127.0.0.66
    failures:
      description: Short human lines, one per problem.
      type: list
      elements: str
      sample: ["status 503 not in [200]", "components.database is false, expected true"]
    json:
      description: The parsed body when it is JSON and at most 1 MiB; else null.
      type: raw
    cert:
      description: The certificate served by an C(https) target; null for C(http) or when no TLS handshake completed.
      type: dict
      contains:
        subject_cn:
          description: Common name of the subject.
          type: str
        subject:
          description: Subject as an RFC 4514 string.
          type: str
        sans:
          description: DNS names and IP addresses of the subject alternative names.
          type: list
          elements: str
        issuer_cn:
          description: Common name of the issuer.
          type: str
        issuer:
          description: Issuer as an RFC 4514 string.
          type: str
        not_before:
          description: Start of validity (ISO 8601, UTC).
          type: str
        not_after:
          description: End of validity (ISO 8601, UTC).
          type: str
        days_left:
          description: Whole days until RV(probes[].cert.not_after), rounded towards zero; negative once expired.
          type: int
        expired:
          description: RV(probes[].cert.not_after) is in the past.
          type: bool
        self_signed:
          description: Subject and issuer are the same.
          type: bool
summary:
  description: Counts of probes.
  returned: always
  type: dict
  sample: {"total": 3, "ok": 2, "failed": 1}
ok:
  description: Every probe succeeded.
  returned: always
  type: bool
elapsed_ms:
  description: Wall time of all probes together, as measured by the module.
  returned: always
  type: float
  sample: 45.2
'''

import ipaddress

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.six import string_types

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._http import (
    HAS_CRYPTOGRAPHY, CRYPTOGRAPHY_IMPORT_ERROR, check_tls_options, parse_url, probe_all, tls_argument_spec)


def main():
    argument_spec = dict(
        targets=dict(type='list', elements='dict', required=True, options=dict(
            name=dict(type='str'),
            url=dict(type='str', required=True),
            method=dict(type='str', choices=['GET', 'POST'], default='GET'),
            body=dict(type='raw'),
            status=dict(type='list', elements='int', default=[200]),
            json_expect=dict(type='dict'),
            latency_budget_ms=dict(type='float'),
            use_api_key=dict(type='bool', default=False),
            source_address=dict(type='str'),
            header_expect=dict(type='dict'),
        )),
        api_key=dict(type='str', no_log=True),
        api_key_header=dict(type='str', default='X-API-Key', no_log=False),
        min_cert_days=dict(type='int'),
        concurrency=dict(type='int', default=32),
    )
    argument_spec.update(tls_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    context = check_tls_options(module)
    if params['concurrency'] < 1:
        module.fail_json(msg='concurrency must be at least 1, got %s' % params['concurrency'])
    if params['min_cert_days'] is not None and params['min_cert_days'] < 0:
        module.fail_json(msg='min_cert_days must not be negative, got %s' % params['min_cert_days'])
    https = False
    for index, target in enumerate(params['targets']):
        label = 'targets[%d]%s' % (index, ' (%s)' % target['name'] if target['name'] else '')
        try:
            https = parse_url(target['url'])[0] == 'https' or https
        except ValueError as exc:
            module.fail_json(msg='%s: %s' % (label, exc))
        target['name'] = target['name'] or target['url']
        if not target['status']:
            module.fail_json(msg='%s: status must list at least one code' % label)
        if target['use_api_key'] and not params['api_key']:
            module.fail_json(msg='%s: use_api_key is true but api_key is not set' % label)
        if target['latency_budget_ms'] is not None and target['latency_budget_ms'] <= 0:
            module.fail_json(msg='%s: latency_budget_ms must be greater than 0' % label)
        for header, expected in (target['header_expect'] or {}).items():
            if not isinstance(expected, string_types):
                module.fail_json(msg='%s: header_expect[%s] must be a string, got %s' % (label, header, type(expected).__name__))
        if target['source_address'] is not None:
            try:
                target['source_address'] = str(ipaddress.ip_address(target['source_address'].strip()))
            except ValueError:
                module.fail_json(msg='%s: source_address %r is not an IPv4 or IPv6 address' % (label, target['source_address']))
    if https and not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib('cryptography'), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    module.exit_json(changed=False, **probe_all(params['targets'], params, context))


if __name__ == '__main__':
    main()
