# The commands of the README. Each sets up .venv first (scripts/setup.sh; a no-op when current).
.PHONY: demo test lab setup
setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/cascade-lab demo

test: setup
	@bash scripts/test.sh

# JupyterLab on the repository, loopback only, behind a random token, the quickstart notebook open (scripts/lab.sh)
lab: setup
	@bash scripts/lab.sh $(LAB_ARGS)
