# Sourced by run.sh and test.sh: makes ./.venv with a Python >= 3.11 and installs the project into it.
# Usage: ensure_venv [pip extras spec, e.g. '.[test]']
ensure_venv() {
  local spec="${1:-.}" py=""
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      py=$candidate; break
    fi
  done
  if [ -z "$py" ]; then
    echo "error: Python 3.11 or newer is needed (apt-get install python3)" >&2; return 2
  fi
  if [ ! -x .venv/bin/python ]; then
    if ! "$py" -m venv .venv 2>/dev/null; then
      rm -rf .venv
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing python3-venv (Debian splits venv out of python3)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        "$py" -m venv .venv
      else
        echo "error: '$py -m venv' failed; install python3-venv (as root: apt-get install python3-venv)" >&2; return 2
      fi
    fi
  fi
  # Reinstall only when the project's dependency list changed since the last install.
  local stamp=.venv/.installed-$(cat pyproject.toml | cksum | cut -d' ' -f1)-$(echo "$spec" | cksum | cut -d' ' -f1)
  if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" && touch "$stamp"
  fi
}

# A tool that pins dependencies the project cannot share (checkov pins an old boto3) gets a venv of its own.
# Usage: ensure_tool_venv DIR 'package==version'
ensure_tool_venv() {
  local dir="$1" spec="$2"
  local stamp="$dir/.installed-$(echo "$spec" | cksum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ]; then
    rm -rf "$dir"
    .venv/bin/python -m venv "$dir" && "$dir/bin/python" -m pip install -q --disable-pip-version-check "$spec" \
      && touch "$stamp"
  fi
}
