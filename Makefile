# The two commands of the README. Each sets up .venv first (scripts/setup.sh; a no-op when current).
.PHONY: demo test setup
setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/cascade-lab demo

test: setup
	@bash scripts/test.sh
