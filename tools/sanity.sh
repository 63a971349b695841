#!/usr/bin/env bash
# ansible-test sanity on exactly what the collection ships: build the tarball, install it
# into a scratch ansible_collections tree, and test there. Works offline: ansible-test's
# get-pip download is replaced by a stand-in that uses ensurepip (see engineering.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
py=${SANITY_PYTHON:-3.11}

cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
for v in 24_2 25_0 25_3; do
  cat > "$cache/get_pip_$v.py" <<'PY'
"""Offline stand-in for get-pip.py: bootstrap pip with ensurepip, then install the arguments."""
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
args = [a for a in sys.argv[1:] if a not in ("--disable-pip-version-check", "--no-setuptools", "--no-wheel")]
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check"] + args)
PY
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/ansible-galaxy" collection build "$root" --output-path "$work" --force >/dev/null
mkdir -p "$work/ac"
"$venv/bin/ansible-galaxy" collection install "$work"/sqlsynth-runbooks-*.tar.gz -p "$work/ac" --no-deps --force >/dev/null
cd "$work/ac/ansible_collections/sqlsynth/runbooks"
# ansible-test lists files through git when it finds a repository; give it one holding
# exactly the shipped files.
git init -q . && git add -A >/dev/null && git -c user.email=ci@local -c user.name=ci commit -qm shipped
PATH="$venv/bin:$PATH" "$venv/bin/ansible-test" sanity --python "$py" --color no "$@"
