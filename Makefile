# Two commands do everything from a fresh clone:
#   make run    the main job: the whole release on the embedded default (no cluster)
#   make test   the test suite (installs Debian packages and pip packages first)
.PHONY: run test setup
setup:
	bash scripts/setup.sh

run: setup
	.venv/bin/llmops run

test: setup
	.venv/bin/python -m pytest tests --durations=25
