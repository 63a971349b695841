# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    """TLS and timeout options of the modules that make HTTP(S) requests (module_utils._http.tls_argument_spec)."""

    DOCUMENTATION = r"""
options:
  validate_certs:
    description:
      - Verify the certificate chain and name of C(https) URLs. When V(false), an expired certificate
        is still reported where the module reports certificates.
    type: bool
    default: true
  ca_path:
    description: CA bundle file (or OpenSSL hashed directory) to verify against instead of the system store.
    type: path
  server_name:
    description:
      - Name sent as SNI and C(Host) header and verified against the certificate of C(https) URLs, so
        V(https://127.0.0.1:8443) can be checked as V(sqlsynth.lab). Defaults to the URL's host.
    type: str
  timeout:
    description: Seconds allowed for connecting and for each read.
    type: float
    default: 5
"""
