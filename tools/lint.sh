#!/usr/bin/env bash
# Lint: ansible-lint (production profile), ansible-doc renders every module and role,
# and every role has meta/argument_specs.yml.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export ANSIBLE_COLLECTIONS_PATH="$root/.build/collections"
bin="$root/.venv/bin"

"$bin/ansible-lint" --profile production

status=0
for m in plugins/modules/*.py; do
  name=$(basename "$m" .py)
  if ! "$bin/ansible-doc" "sqlsynth.runbooks.$name" >/dev/null 2>"/tmp/ansible-doc-$name.err"; then
    echo "ansible-doc cannot render module $name:"; cat "/tmp/ansible-doc-$name.err"; status=1
  fi
done
for r in roles/*/; do
  name=$(basename "$r")
  if [ ! -f "$r/meta/argument_specs.yml" ]; then
    echo "role $name has no meta/argument_specs.yml"; status=1; continue
  fi
  if ! "$bin/ansible-doc" -t role "sqlsynth.runbooks.$name" >/dev/null 2>"/tmp/ansible-doc-role-$name.err"; then
    echo "ansible-doc -t role cannot render $name:"; cat "/tmp/ansible-doc-role-$name.err"; status=1
  fi
done
modules=$(find plugins/modules -name '*.py' | wc -l)
roles=$(find roles -mindepth 1 -maxdepth 1 -type d | wc -l)
[ "$status" -eq 0 ] && echo "lint: ansible-lint clean; ansible-doc renders $modules modules and $roles roles"
exit "$status"
