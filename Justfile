# wtal developer recipes (install `just` with: pip install rust-just)

# create ./.venv with the project and dev tools
setup:
    bash scripts/setup.sh dev

# the whole test suite (the README's test command)
test *ARGS:
    bash scripts/test.sh {{ARGS}}

# the core suite with oneDNN and ATen held to AVX2 (CI runs it after `test`)
test-avx2 *ARGS:
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 .venv/bin/python -m pytest -q {{ARGS}}

lint:
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .

fmt:
    .venv/bin/ruff check --fix .
    .venv/bin/ruff format .

# benchmarks (results go into BENCHMARKS.md by hand, with machine and versions)
bench:
    .venv/bin/python bench/evaluate.py
    .venv/bin/python bench/localize.py
    .venv/bin/python bench/denoise.py
    .venv/bin/python bench/train.py
    .venv/bin/python bench/dcc_overhead.py --repeats 3

# the main job on the built-in synthetic dataset
reproduce:
    .venv/bin/wtal run
