# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP(S) probing for the *_info modules (private to this collection).

Only the standard library talks HTTP (http.client + ssl, so SNI and the name to verify can
differ from the address connected to). cryptography is used only to describe the served
certificate.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import errno
import json
import os
import socket
import ssl
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

try:
    import http.client as http_client
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported by this collection
    http_client = urlsplit = None

try:
    from cryptography import x509
    from cryptography.x509.oid import ExtensionOID, NameOID
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

MAX_BODY = 1024 * 1024  # bytes read (and parsed as JSON) per response
USER_AGENT = 'sqlsynth.runbooks'
# OpenSSL verify codes -> what a person should read.
_UNTRUSTED = (2, 18, 19, 20, 21)  # unknown issuer / self-signed
_EXPIRED, _NOT_YET_VALID, _NAME_MISMATCH = 10, 9, 62


def tls_argument_spec():
    """Options every module that makes HTTP(S) requests shares."""
    return dict(
        validate_certs=dict(type='bool', default=True),
        ca_path=dict(type='path'),
        server_name=dict(type='str'),
        timeout=dict(type='float', default=5.0),
    )


def check_tls_options(module):
    """fail_json on bad shared options; return the SSL context to verify with."""
    params = module.params
    if params['timeout'] <= 0:
        module.fail_json(msg='timeout must be greater than 0, got %s' % params['timeout'])
    try:
        return make_context(params['validate_certs'], params['ca_path'])
    except (IOError, OSError, ssl.SSLError) as exc:
        module.fail_json(msg='cannot load ca_path %s: %s' % (params['ca_path'], exc))


def make_context(validate_certs=True, ca_path=None):
    if not validate_certs:
        return unverified_context()
    ctx = ssl.create_default_context()
    if ca_path:
        if os.path.isdir(ca_path):
            ctx.load_verify_locations(capath=ca_path)
        else:
            ctx.load_verify_locations(cafile=ca_path)
    return ctx


def unverified_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def parse_url(url):
    """(scheme, host, port, path) of an http(s) URL; ValueError with a readable reason otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError('url %r is not valid: %s' % (url, exc))
    if parts.scheme not in ('http', 'https'):
        raise ValueError('url %r must start with http:// or https://' % url)
    if not parts.hostname:
        raise ValueError('url %r has no host' % url)
    path = parts.path or '/'
    if parts.query:
        path += '?' + parts.query
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == 'https' else 80), path


class _Connection(http_client.HTTPConnection):
    """HTTP or HTTPS connection whose TLS name (SNI and verification) may differ from the address."""

    def __init__(self, host, port, timeout, context=None, server_name=None, source_address=None):
        http_client.HTTPConnection.__init__(self, host, port, timeout=timeout,
                                            source_address=(source_address, 0) if source_address else None)
        self._context = context
        self._server_name = server_name or host
        self.peer_der = None

    def connect(self):
        http_client.HTTPConnection.connect(self)
        if self._context is not None:
            self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)
            self.peer_der = self.sock.getpeercert(binary_form=True)


def request(url, context, timeout, method='GET', headers=None, body=None, server_name=None, max_body=MAX_BODY,
            source_address=None):
    """One request. Returns dict(status, headers, body (bytes, at most max_body), truncated, peer_der).

    source_address: local IP address the client socket is bound to (port chosen by the system).

    Raises socket/ssl/http.client errors; describe_error() turns them into one line.
    """
    scheme, host, port, path = parse_url(url)
    tls = scheme == 'https'
    conn = _Connection(host, port, timeout, context if tls else None, server_name if tls else None, source_address)
    send = {'User-Agent': USER_AGENT, 'Accept': 'application/json, text/plain;q=0.9, */*;q=0.5'}
    if tls and server_name:
        send['Host'] = server_name if port == 443 else '%s:%s' % (server_name, port)
    data = None
    if body is not None:
        data = json.dumps(body).encode('utf-8')
        send['Content-Type'] = 'application/json'
    send.update(headers or {})
    try:
        conn.request(method, path, body=data, headers=send)
        resp = conn.getresponse()
        payload = resp.read(max_body + 1)
        return dict(status=resp.status, headers=dict((k.lower(), v) for k, v in resp.getheaders()),
                    body=payload[:max_body], truncated=len(payload) > max_body, peer_der=conn.peer_der)
    finally:
        conn.close()


def fetch_peer_cert(url, timeout, server_name=None, source_address=None):
    """DER of the certificate served at an https URL, from a handshake that verifies nothing."""
    dummy, host, port, dummy2 = parse_url(url)
    sock = socket.create_connection((host, port), timeout=timeout,
                                    source_address=(source_address, 0) if source_address else None)
    try:
        with unverified_context().wrap_socket(sock, server_hostname=server_name or host) as tls:
            return tls.getpeercert(binary_form=True)
    finally:
        sock.close()


def _name(name):
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else None


def _utc(cert, attr):
    value = getattr(cert, attr + '_utc', None)
    if value is None:  # cryptography < 42
        value = getattr(cert, attr).replace(tzinfo=datetime.timezone.utc)
    return value


def describe_cert(der, now=None):
    """Subject CN, SANs, issuer, validity and days left of a DER certificate."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        sans = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        sans += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        sans = []
    now = now or datetime.datetime.now(datetime.timezone.utc)
    not_after = _utc(cert, 'not_valid_after')
    return dict(
        subject_cn=_name(cert.subject), subject=cert.subject.rfc4514_string(), sans=sans,
        issuer_cn=_name(cert.issuer), issuer=cert.issuer.rfc4514_string(),
        not_before=_utc(cert, 'not_valid_before').isoformat(), not_after=not_after.isoformat(),
        days_left=int((not_after - now).total_seconds() / 86400.0),  # whole days, towards zero
        expired=not_after <= now, self_signed=cert.subject == cert.issuer,
    )


def _days(n):
    return '%d day%s' % (n, '' if n == 1 else 's')


def expiry_failure(cert, min_days=None):
    """'certificate expired 2 days ago' / 'certificate expires in 5 days, ...' or None."""
    left = cert['days_left']
    if cert['expired']:
        return 'certificate expired %s ago (not_after %s)' % (
            _days(-left) if left else 'less than a day', cert['not_after'])
    if min_days is not None and left < min_days:
        return 'certificate expires in %s (not_after %s), fewer than min_cert_days %d' % (
            _days(left), cert['not_after'], min_days)
    return None


def verify_failure(exc, cert, name):
    """One line for a failed certificate verification."""
    code = getattr(exc, 'verify_code', None)
    if code == _EXPIRED and cert:
        return expiry_failure(cert)
    if code == _NOT_YET_VALID and cert:
        return 'certificate not valid before %s' % cert['not_before']
    if code == _NAME_MISMATCH:
        return 'certificate name mismatch: %s is not in %s' % (
            name, (cert or {}).get('sans') or (cert or {}).get('subject_cn') or 'the certificate')
    if code in _UNTRUSTED:
        issuer = (cert or {}).get('issuer') or 'unknown'
        return 'certificate not trusted: unknown CA (issuer %s; %s)' % (issuer, exc.verify_message)
    return 'certificate verification failed: %s' % (getattr(exc, 'verify_message', None) or exc)


def describe_error(exc, timeout, host=None, source_address=None):
    """One short line for a network error (no traceback)."""
    where = ' (%s)' % host if host else ''
    if source_address and getattr(exc, 'errno', None) in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EINVAL):
        return 'cannot bind source address %s: %s' % (source_address, getattr(exc, 'strerror', None) or exc)
    if isinstance(exc, socket.timeout) or 'timed out' in str(exc):
        return 'timed out after %.1f s' % timeout
    if isinstance(exc, socket.gaierror):
        return 'cannot resolve host%s: %s' % (where, exc.strerror or exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return 'certificate verification failed: %s' % exc.verify_message
    if isinstance(exc, ssl.SSLError):
        return 'TLS error%s: %s' % (where, exc.reason or exc)
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, 'errno', None) == errno.ECONNREFUSED:
        return 'connection refused%s' % where
    if isinstance(exc, (ConnectionResetError, http_client.RemoteDisconnected)):
        return 'connection closed by the server%s' % where
    if isinstance(exc, http_client.HTTPException):
        return 'bad HTTP response%s: %s' % (where, exc.__class__.__name__)
    return 'connection failed%s: %s' % (where, getattr(exc, 'strerror', None) or exc)


_MISSING = object()


def _lookup(doc, parts):
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.lstrip('-').isdigit() and -len(doc) <= int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return _MISSING
    return doc


def _same(actual, expected):
    """Equality that does not take true for 1 (JSON booleans and numbers are different things)."""
    return actual == expected and isinstance(actual, bool) == isinstance(expected, bool)


def _show(value):
    return json.dumps(value, sort_keys=True)


def json_failures(doc, expect):
    """Failures of a parsed JSON body against {dotted.path: value}; 'a.*' means every value under a."""
    failures = []
    for path, expected in expect.items():
        if path.endswith('.*') or path == '*':
            prefix = path[:-2] if path.endswith('.*') else ''
            container = _lookup(doc, prefix.split('.')) if prefix else doc
            if isinstance(container, dict):
                items = sorted(container.items())
            elif isinstance(container, list):
                items = [(str(i), v) for i, v in enumerate(container)]
            else:
                failures.append('%s is %s, expected an object whose values are all %s' % (
                    prefix or 'body', 'missing' if container is _MISSING else _show(container), _show(expected)))
                continue
            if not items:
                failures.append('%s is empty, expected values %s' % (prefix or 'body', _show(expected)))
            for key, value in items:
                if not _same(value, expected):
                    failures.append('%s is %s, expected %s' % (
                        '%s.%s' % (prefix, key) if prefix else key, _show(value), _show(expected)))
            continue
        actual = _lookup(doc, path.split('.'))
        if actual is _MISSING:
            failures.append('%s is missing, expected %s' % (path, _show(expected)))
        elif not _same(actual, expected):
            failures.append('%s is %s, expected %s' % (path, _show(actual), _show(expected)))
    return failures


def parse_json(resp):
    """The parsed body when it is JSON, else None."""
    body = resp['body']
    ctype = resp['headers'].get('content-type', '')
    if resp['truncated'] or not body or ('json' not in ctype and body.lstrip()[:1] not in (b'{', b'[')):
        return None
    try:
        return json.loads(body.decode('utf-8'))
    except ValueError:
        return None


def probe(target, options, context):
    """Probe one target; never raises for network trouble."""
    timeout = options['timeout']
    server_name = options.get('server_name')
    url = target['url']
    source = target.get('source_address')
    result = dict(name=target['name'], url=url, ok=False, status=None, elapsed_ms=None,
                  failures=[], json=None, cert=None)
    if source:
        result['source_address'] = source
    headers = {}
    if target.get('use_api_key'):
        headers[options['api_key_header']] = options['api_key']
    scheme, host, port, dummy = parse_url(url)
    failures = result['failures']
    start = time.monotonic()
    resp = None
    try:
        resp = request(url, context, timeout, target['method'], headers, target.get('body'), server_name,
                       source_address=source)
    except ssl.SSLCertVerificationError as exc:
        try:
            result['cert'] = describe_cert(fetch_peer_cert(url, timeout, server_name, source))
        except Exception:  # the probe already failed; the certificate is a bonus
            pass
        failures.append(verify_failure(exc, result['cert'], server_name or host))
    except Exception as exc:  # network failures are probe results, not module failures
        failures.append(describe_error(exc, timeout, '%s:%s' % (host, port), source))
    elapsed = round((time.monotonic() - start) * 1000.0, 1)
    result['elapsed_ms'] = elapsed
    if resp is not None:
        result['status'] = resp['status']
        if scheme == 'https' and resp['peer_der']:
            result['cert'] = describe_cert(resp['peer_der'])
        if resp['status'] not in target['status']:
            failures.append('status %s not in %s' % (resp['status'], target['status']))
        result['json'] = parse_json(resp)
        if target.get('json_expect'):
            if result['json'] is None:
                failures.append('body is %s, cannot check %s' % (
                    'larger than %d bytes' % MAX_BODY if resp['truncated'] else 'not JSON',
                    ', '.join(sorted(target['json_expect']))))
            else:
                failures.extend(json_failures(result['json'], target['json_expect']))
        for header, expected in sorted((target.get('header_expect') or {}).items()):
            value = resp['headers'].get(header.lower())
            if value is None:
                failures.append('header %s is missing' % header)
            elif expected not in value:
                failures.append('header %s does not contain %r' % (header, expected))
        budget = target.get('latency_budget_ms')
        if budget is not None and elapsed > budget:
            failures.append('took %.0f ms, over the latency budget of %g ms' % (elapsed, budget))
        if result['cert'] and (options.get('min_cert_days') is not None or not options.get('validate_certs', True)):
            expiry = expiry_failure(result['cert'], options.get('min_cert_days'))
            if expiry:
                failures.append(expiry)
    result['ok'] = not failures
    return result


def probe_all(targets, options, context):
    """Probe targets concurrently; results in target order, plus summary and wall time."""
    start = time.monotonic()
    workers = max(1, min(options.get('concurrency') or 32, len(targets)))
    if targets:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            probes = list(pool.map(lambda t: probe(t, options, context), targets))
    else:
        probes = []
    passed = sum(1 for p in probes if p['ok'])
    return dict(probes=probes, ok=passed == len(probes),
                summary=dict(total=len(probes), ok=passed, failed=len(probes) - passed),
                elapsed_ms=round((time.monotonic() - start) * 1000.0, 1))
