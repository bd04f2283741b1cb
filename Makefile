# Two commands on a fresh machine: `make demo`, then `make test`.
PY := .venv/bin/python
STAMP := .venv/.installed-$(shell (cat pyproject.toml; python3 --version) | sha256sum | cut -c1-12)
DEMO_MODEL ?= qwen2.5-coder-1.5b-instruct
DEMO_DRAFT ?= qwen2.5-coder-0.5b-instruct

.PHONY: install fetch fetch-test demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,tpu-plan]'
	rm -f .venv/.installed-*; touch $(STAMP)

install: $(STAMP)

fetch: install  ## the models used by the demo, tests and benchmarks (cached under ~/.cache/jaxspec)
	$(PY) -m conversion.assets smollm2-135m-instruct qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct

fetch-test: install
	$(PY) -m conversion.assets smollm2-135m-instruct qwen2.5-coder-0.5b-instruct

demo: fetch
	$(PY) -m jaxspec generate --model $(DEMO_MODEL) --draft $(DEMO_DRAFT) --method chain -k 7 \
		--prompts humaneval --limit 1 --max-new-tokens 128 --compare-vanilla

test: fetch-test  ## the whole suite, what CI runs (docs/testing.md)
	$(PY) -m pytest -q -n 2 --dist loadgroup --timeout 1200 --durations=25 tests

test-fast: install  ## the edit loop: no model files, the "fast" hypothesis profile, slow tests left out
	HYPOTHESIS_PROFILE=fast $(PY) -m pytest -q -n 2 --dist loadgroup --timeout 600 --durations=10 \
		-m "not real and not assets and not slow" tests

lint: install  ## ruff (lint and format, line length 120) and the layer contract (pyproject.toml)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

bench: fetch
	$(PY) -m experiments.vanilla.bench_vanilla

clean:
	rm -rf .venv .pytest_cache .hypothesis
