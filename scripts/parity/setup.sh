#!/usr/bin/env bash
# Create (or update) the parity oracle venv at scripts/parity/.venv from
# requirements.txt. Idempotent: an up-to-date venv is left alone (pip only
# installs what is missing or pinned differently). Needs python3 >= 3.10 with
# the venv module (Debian: apt-get install python3-venv).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
req="$here/requirements.txt"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "setup.sh: $python not found (set PYTHON=/path/to/python3)" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv"
    "$python" -m venv "$venv"
fi

# A stamp of the requirements lets a rerun skip pip entirely when nothing changed.
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$venv is up to date with requirements.txt"
else
    "$venv/bin/python" -m pip install --upgrade pip
    "$venv/bin/python" -m pip install -r "$req"
    echo "$want" > "$stamp"
fi

"$venv/bin/python" -c "import open_clip, torch; print(f'open_clip {open_clip.__version__}, torch {torch.__version__}')"
echo
echo "activate with:  source $venv/bin/activate"
echo "or run scripts directly:  $venv/bin/python $here/make_model_fixtures.py"
