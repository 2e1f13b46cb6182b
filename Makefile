# Shortcuts for the scripts in scripts/ (which work without make).
.PHONY: setup demo test bench lab
setup:
	bash scripts/setup
demo:
	bash scripts/demo
test:
	bash scripts/test
bench: setup
	.venv/bin/python benchmarks/overhead.py
	.venv/bin/python benchmarks/storage.py
	.venv/bin/python benchmarks/parallel.py
	.venv/bin/python benchmarks/pruning.py
	.venv/bin/python benchmarks/pbt.py
	.venv/bin/python benchmarks/quality/run.py --write-readme
lab: setup
	.venv/bin/jupyter lab notebooks/quickstart.ipynb
