#!/usr/bin/env bash
# Print the path of a working Python 3.10 interpreter (PATH, then pyenv), or fail.
# chainercv 0.13.1's C extension does not build on 3.11+, so 3.10 it must be.
for cand in "${PYTHON310:-}" python3.10 \
    $(command -v pyenv >/dev/null 2>&1 && ls -d "$(pyenv root)"/versions/3.10*/bin/python 2>/dev/null) \
    $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python 2>/dev/null); do
  [ -n "$cand" ] || continue
  if "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
    command -v "$cand"
    exit 0
  fi
done
echo "Python 3.10 not found: install it (e.g. 'pyenv install 3.10') or set PYTHON310=/path/to/python3.10" >&2
exit 1
