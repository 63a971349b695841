# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    """Connection options for modules that talk to PostgreSQL."""

    DOCUMENTATION = r'''
options:
  login_host:
    description:
      - Host name or address of the PostgreSQL server, or a directory holding its Unix socket.
    type: str
    default: 127.0.0.1
  login_port:
    description:
      - TCP port of the server.
    type: int
    default: 5432
  login_user:
    description:
      - Role to connect as. The role needs C(pg_monitor) (or C(pg_read_all_stats)) to see the state and
        query of other roles' sessions; without it those sessions count under state C(unknown).
    type: str
    default: postgres
  login_password:
    description:
      - Password of O(login_user). Never returned, logged or shown in error messages.
    type: str
  login_db:
    description:
      - Database to connect to.
    type: str
    default: postgres
  connect_timeout:
    description:
      - Seconds to wait for the connection. Each statement is also limited to this many seconds
        (C(statement_timeout), at least one second).
    type: int
    default: 5
  ssl_mode:
    description:
      - libpq C(sslmode). Use V(verify-full) with O(ca_cert) to verify the server certificate and name.
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ca_cert:
    description:
      - CA bundle to verify the server certificate against (libpq C(sslrootcert)).
    type: path
requirements:
  - psycopg >= 3.1 (Python library on the host that runs the module)
'''
