#!/usr/bin/env bash
# Installs what running the notebooks headlessly needs, idempotently (docs/notebooks.md):
#   1. Jupyter's nbconvert, nbclient, ipykernel and jupyter-client from Debian (needs root;
#      otherwise prints the command and exits 1).
#   2. tslab, the TypeScript kernel, into its own npm prefix (default ~/.cache/celerity/tslab, or
#      $CELERITY_TSLAB_PREFIX), not into the project's node_modules: tslab depends on TypeScript
#      5.0.4, whose `tsc` would replace the project's in node_modules/.bin.
#   3. tslab's kernel spec for /usr/bin/python3 (the Debian Python that has Jupyter; `python3` on
#      PATH may be another one), pointing at that tslab by absolute path.
# Usage: bash scripts/setup-notebooks.sh
set -euo pipefail

TSLAB_VERSION=1.0.22
PREFIX="${CELERITY_TSLAB_PREFIX:-$HOME/.cache/celerity/tslab}"
PYTHON=/usr/bin/python3
APT_PACKAGES=(jupyter-nbconvert python3-nbclient python3-ipykernel jupyter-client)
export PYDEVD_DISABLE_FILE_VALIDATION=1

have_jupyter() {
  [ -x "$PYTHON" ] && [ -x /usr/bin/jupyter-nbconvert ] &&
    "$PYTHON" -c "import nbconvert, nbclient, ipykernel, jupyter_client" >/dev/null 2>&1
}

if have_jupyter; then
  echo "jupyter: already installed"
elif [ "$(id -u)" = 0 ]; then
  echo "jupyter: installing ${APT_PACKAGES[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
  have_jupyter || { echo "error: Jupyter is still not usable with $PYTHON after installing ${APT_PACKAGES[*]}" >&2; exit 1; }
else
  echo "error: Jupyter is missing and installing it needs root; run:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}" >&2
  echo "then run this script again: bash scripts/setup-notebooks.sh" >&2
  exit 1
fi

TSLAB="$PREFIX/node_modules/.bin/tslab"
if [ "$("$TSLAB" --version 2>/dev/null || true)" = "tslab $TSLAB_VERSION" ]; then
  echo "tslab: $TSLAB_VERSION already in $PREFIX"
else
  echo "tslab: installing $TSLAB_VERSION into $PREFIX"
  mkdir -p "$PREFIX"
  npm install --prefix "$PREFIX" --save-exact --no-audit --no-fund --loglevel=error "tslab@$TSLAB_VERSION"
fi

# The kernel spec names this tslab by absolute path, so the kernel starts whatever PATH is.
SPECS=(/usr/local/share/jupyter/kernels/tslab/kernel.json /usr/share/jupyter/kernels/tslab/kernel.json "$HOME/.local/share/jupyter/kernels/tslab/kernel.json")
for spec in "${SPECS[@]}"; do
  if [ -f "$spec" ] && grep -qF "\"$TSLAB\"" "$spec"; then
    echo "tslab kernel: $spec"
    exit 0
  fi
done
"$TSLAB" install --python="$PYTHON" --binary="$TSLAB" >/dev/null 2>&1 || {
  echo "error: \`$TSLAB install --python=$PYTHON\` failed; run it by hand to see why" >&2
  exit 1
}
for spec in "${SPECS[@]}"; do
  if [ -f "$spec" ] && grep -qF "\"$TSLAB\"" "$spec"; then
    echo "tslab kernel: installed $spec"
    exit 0
  fi
done
echo "error: \`$TSLAB install\` ran but no tslab kernel spec names $TSLAB" >&2
exit 1
