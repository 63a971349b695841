# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    """Connection options for modules that talk to Redis."""

    DOCUMENTATION = r'''
options:
  host:
    description:
      - Host name or address of the Redis server.
    type: str
    default: 127.0.0.1
  port:
    description:
      - TCP port of the server.
    type: int
    default: 6379
  db:
    description:
      - Database number to select.
    type: int
    default: 0
  username:
    description:
      - ACL user name (Redis 6 and later). Leave unset for the C(default) user with C(requirepass).
    type: str
  password:
    description:
      - Password (C(requirepass) or the ACL user's). Never returned, logged or shown in error messages.
    type: str
  tls:
    description:
      - Connect with TLS.
    type: bool
    default: false
  validate_certs:
    description:
      - With O(tls), verify the server certificate and host name. Turn off only for throwaway test servers.
    type: bool
    default: true
  ca_path:
    description:
      - CA bundle to verify the server certificate against; the system store when unset.
    type: path
  socket_timeout:
    description:
      - Seconds to wait for the connection and for each reply.
    type: float
    default: 3
requirements:
  - redis (redis-py) >= 4.5 (Python library on the host that runs the module)
'''
