# The commands of the README. Each sets up .venv first (scripts/setup.sh; a no-op when current).
.PHONY: demo test lab docs setup
setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/cascade-lab demo

test: setup
	@bash scripts/test.sh

# JupyterLab on the repository, loopback only, behind a random token, the quickstart notebook open (scripts/lab.sh)
lab: setup
	@bash scripts/lab.sh $(LAB_ARGS)

# The documentation site from the notebooks, into docs/_build/html (scripts/docs.py; offline once built)
docs: setup
	.venv/bin/python scripts/docs.py
