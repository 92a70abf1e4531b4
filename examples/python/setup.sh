#!/usr/bin/env bash
# Creates (once) a virtualenv at $1 with this example's requirements from PyPI; never touches
# the system's Python. Exit 3 when PyPI cannot be reached (the caller skips, and says so).
set -euo pipefail
venv=${1:?usage: setup.sh VENV_DIR}
here=$(cd "$(dirname "$0")" && pwd)
stamp="$venv/.requirements"
if [[ -x "$venv/bin/python" && -f "$stamp" ]] && cmp -s "$stamp" "$here/requirements.txt"; then
    exit 0
fi
python3 -m venv "$venv"
if ! "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"; then
    echo "setup.sh: cannot install $(tr '\n' ' ' < "$here/requirements.txt")from PyPI" >&2
    exit 3
fi
cp "$here/requirements.txt" "$stamp"
