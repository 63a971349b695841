"""nginx_blocklist filter: the text nginx will include, from the clients to block and the current file."""
import shutil
import subprocess

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.sqlsynth.runbooks.plugins.filter.nginx_blocklist import HEADER, FilterModule

nginx_blocklist = FilterModule().filters()["nginx_blocklist"]
LAB_INITIAL = "# deny 192.0.2.1;  (one line per blocked address)\n"


def deny_lines(text):
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_lab_initial_file_plus_one_client():
    text = nginx_blocklist(["127.0.0.66"], existing=LAB_INITIAL)
    assert text == HEADER + "deny 127.0.0.66;\n"
    assert text.startswith("#") and text.endswith("\n")


def test_sorted_unique_canonical_and_merged_with_existing():
    existing = HEADER + "deny 10.0.0.0/8;\ndeny 127.0.0.66;\n"
    text = nginx_blocklist(["203.0.113.7", " 127.0.0.66 ", "2001:DB8:0:0::1", "127.0.0.9/32", "2001:db8::/32",
                            "10.0.0.0/8", "9.9.9.9"], existing=existing)
    assert deny_lines(text) == ["deny 9.9.9.9;", "deny 10.0.0.0/8;", "deny 127.0.0.9;", "deny 127.0.0.66;",
                                "deny 203.0.113.7;", "deny 2001:db8::/32;", "deny 2001:db8::1;"]


def test_idempotent_on_its_own_output():
    first = nginx_blocklist(["127.0.0.66", "198.51.100.0/24"])
    assert nginx_blocklist(["198.51.100.0/24"], existing=first) == first
    assert nginx_blocklist([], existing=first) == first


def test_remove_unblocks_and_empty_list_gives_header_only():
    current = nginx_blocklist(["127.0.0.66", "198.51.100.0/24"])
    assert deny_lines(nginx_blocklist([], existing=current, remove=["127.0.0.66"])) == ["deny 198.51.100.0/24;"]
    assert nginx_blocklist([]) == HEADER


def test_existing_deny_line_with_trailing_comment_is_kept():
    assert deny_lines(nginx_blocklist([], existing="deny 127.0.0.66;  # injection burst\n")) == ["deny 127.0.0.66;"]


@pytest.mark.parametrize("clients, message", [
    ("127.0.0.66", "input must be a list of addresses or networks, got str"),
    ({"ip": "127.0.0.66"}, "input must be a list of addresses or networks, got dict"),
    (None, "input must be a list of addresses or networks, got NoneType"),
    (["127.0.0.66", "evil.example.com"], "input entry 'evil.example.com' is not an IPv4 or IPv6 address or network"),
    (["256.1.1.1"], "input entry '256.1.1.1' is not an IPv4 or IPv6 address or network"),
    (["127.0.0.66; allow all"], "input entry '127.0.0.66; allow all' is not an IPv4 or IPv6 address"),
    ([""], "input entry '' is not an IPv4 or IPv6 address or network"),
    ([42], "input entry 42 is not a string"),
    (["10.0.0.5/8"], "input entry '10.0.0.5/8' has host bits set; give the network address (10.0.0.0/8)"),
])
def test_invalid_input_names_the_entry(clients, message):
    with pytest.raises(AnsibleFilterError) as info:
        nginx_blocklist(clients)
    assert message in str(info.value)


@pytest.mark.parametrize("existing, message", [
    ("deny all;\n", "existing line 1 address 'all' is not an IPv4 or IPv6 address"),
    ("# ok\nallow 127.0.0.1;\n", "existing line 2 'allow 127.0.0.1;' is not a \"deny <address>;\" line"),
    (["deny 1.2.3.4;"], "existing must be the text of the file, got list"),
])
def test_bad_existing_file_is_refused_not_dropped(existing, message):
    with pytest.raises(AnsibleFilterError) as info:
        nginx_blocklist(["127.0.0.66"], existing=existing)
    assert message in str(info.value)


def test_remove_must_be_a_list_of_addresses():
    with pytest.raises(AnsibleFilterError, match="remove must be a list of addresses, got str"):
        nginx_blocklist([], remove="127.0.0.66")


def test_real_nginx_accepts_the_rendered_file(tmp_path):
    """nginx -t on a configuration that includes the rendered file in a server block."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    blocklist = tmp_path / "blocklist.conf"
    blocklist.write_text(nginx_blocklist(["127.0.0.66", "2001:db8::/32", "203.0.113.0/24"]))
    conf = tmp_path / "nginx.conf"
    conf.write_text("pid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\nhttp {\n  access_log off;\n"
                    "  server {\n    listen 127.0.0.1:1;\n    include %s;\n  }\n}\n" % (tmp_path, tmp_path, blocklist))
    proc = subprocess.run([nginx, "-t", "-q", "-c", str(conf), "-e", str(tmp_path / "error.log")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
