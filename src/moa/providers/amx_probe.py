"""Child process of :func:`moa.providers.llama_load.amx_runs`: does AMX run here?

``python -m moa.providers.amx_probe MODEL.gguf`` loads the model with llama.cpp's
extra buffers on (its AMX buffers, in a build with AMX) and evaluates a prompt of
several tokens, the matrix product that faults where AMX does not run. Exit 0:
it ran (stderr names the buffer types the weights went to); death by a signal: it
does not.
"""

from __future__ import annotations

import sys
from pathlib import Path

from moa.providers.llama_load import _load_log, _model_defaults
from moa.providers.local_model import import_llama

_PROMPT = b"A farmer has 17 sheep. All but 9 run away. How many are left?" * 2


def main(argv: list[str]) -> int:
    (model,) = argv
    llama_cpp = import_llama()
    with _model_defaults(llama_cpp, use_extra_bufts=True), _load_log(llama_cpp) as buffers:
        llm = llama_cpp.Llama(model_path=str(Path(model)), n_ctx=256, verbose=False)
    llm.eval(llm.tokenize(_PROMPT))
    print(f"weights in {', '.join(buffers) or 'unreported buffers'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
