# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
name: nginx_blocklist
short_description: Render an nginx blocklist (sorted unique C(deny) lines) from client addresses
version_added: 0.1.0
author: sqlsynth.runbooks contributors (@sqlsynth)
description:
  - Takes a list of client addresses or networks to block and the text of the current blocklist file, and
    returns the text of the new file - a header comment and one C(deny <address>;) line per entry, sorted
    (IPv4 before IPv6, by address, then by prefix length) and without duplicates. The file is meant to be
    included in every nginx C(server) block.
  - The entries of O(existing) are kept, so blocking is additive; O(remove) takes entries out again.
  - Every entry is validated with Python's C(ipaddress) module as an IPv4 or IPv6 address or network and written
    in its canonical form (V(10.0.0.0/8), V(2001:db8::/32)); a network with host bits set (V(10.0.0.5/8)) is
    refused rather than silently widened, and a full-length prefix (V(/32), V(/128)) is written as a plain
    address.
  - A non-list input, an entry that is not an address or network, or a line of O(existing) that is neither a
    comment, blank nor a C(deny <address>;) line raises an error that names it.
  - The output is deterministic (no timestamp), so writing it with M(ansible.builtin.copy) is idempotent.
options:
  _input:
    description: Client addresses or networks to block (strings).
    type: list
    elements: str
    required: true
  existing:
    description: Text of the current blocklist file (empty when there is none).
    type: str
    default: ""
  remove:
    description: Addresses or networks to take out of the result (unblock).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Render the new blocklist from the current one
  ansible.builtin.set_fact:
    blocklist_text: "{{ ['127.0.0.66', '203.0.113.0/24'] | sqlsynth.runbooks.nginx_blocklist(existing=current_text) }}"
"""

RETURN = r"""
_value:
  description: The new file text, ending with a newline.
  type: str
  sample: |
    # Managed by sqlsynth.runbooks (nginx_blocklist filter): clients nginx denies (403).
    deny 127.0.0.66;
    deny 203.0.113.0/24;
"""

import ipaddress
import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.six import string_types

HEADER = '# Managed by sqlsynth.runbooks (nginx_blocklist filter): clients nginx denies (403).\n'
_DENY = re.compile(r'^deny\s+(\S+?)\s*;\s*(#.*)?$')


def _network(entry, where):
    if not isinstance(entry, string_types) or isinstance(entry, bool):
        raise AnsibleFilterError('nginx_blocklist: %s %r is not a string; expected an IPv4/IPv6 address or network'
                                 % (where, entry))
    text = to_text(entry).strip()
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if '/' in text and 'has host bits set' in str(exc):
            raise AnsibleFilterError('nginx_blocklist: %s %r has host bits set; give the network address (%s) or a '
                                     'single address' % (where, text, ipaddress.ip_network(text, strict=False)))
        raise AnsibleFilterError('nginx_blocklist: %s %r is not an IPv4 or IPv6 address or network' % (where, text))


def _show(net):
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _entries(value, name):
    if value is None:
        return []
    if isinstance(value, string_types) or not isinstance(value, (list, tuple)):
        raise AnsibleFilterError('nginx_blocklist: %s must be a list of addresses, got %s' % (name, type(value).__name__))
    return [_network(entry, '%s entry' % name) for entry in value]


def parse_blocklist(text):
    """The networks of the deny lines of a blocklist file's text."""
    if text is None:
        return []
    if not isinstance(text, string_types):
        raise AnsibleFilterError('nginx_blocklist: existing must be the text of the file, got %s' % type(text).__name__)
    nets = []
    for number, line in enumerate(to_text(text).splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith('#'):
            continue
        match = _DENY.match(stripped)
        if not match:
            raise AnsibleFilterError('nginx_blocklist: existing line %d %r is not a "deny <address>;" line; '
                                     'the blocklist file may only hold deny lines and comments' % (number, stripped))
        nets.append(_network(match.group(1), 'existing line %d address' % number))
    return nets


def nginx_blocklist(clients, existing='', remove=None):
    """New blocklist text: header plus sorted unique deny lines of existing + clients - remove."""
    if isinstance(clients, string_types) or not isinstance(clients, (list, tuple)):
        raise AnsibleFilterError('nginx_blocklist: input must be a list of addresses or networks, got %s %r'
                                 % (type(clients).__name__, clients))
    wanted = set(parse_blocklist(existing)) | set(_entries(clients, 'input'))
    wanted -= set(_entries(remove, 'remove'))
    ordered = sorted(wanted, key=lambda n: (n.version, n.network_address, n.prefixlen))
    return HEADER + ''.join('deny %s;\n' % _show(net) for net in ordered)


class FilterModule(object):
    """sqlsynth.runbooks nginx blocklist filter."""

    def filters(self):
        return {'nginx_blocklist': nginx_blocklist}
