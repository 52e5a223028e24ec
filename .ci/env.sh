# Sourced by the .ci scripts: keep every cache a tool writes under $HOME inside the build folder,
# and never let a test reach a model hub.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.build/cache"
mkdir -p "$cache"
export IPYTHONDIR="$cache/ipython" MPLCONFIGDIR="$cache/matplotlib" \
       JUPYTER_CONFIG_DIR="$cache/jupyter/config" JUPYTER_DATA_DIR="$cache/jupyter/data" \
       JUPYTER_RUNTIME_DIR="$cache/jupyter/runtime" HF_HOME="$cache/hf" TORCH_HOME="$cache/torch" \
       XDG_CACHE_HOME="$cache/xdg"
export SMN_NB_DATA="${SMN_NB_DATA:-$cache/data}"   # datasets and their decoded caches (a user's own setting wins)
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYDEVD_DISABLE_FILE_VALIDATION=1
export PATH="$root/.venv/bin:$PATH"
