# Shortcuts for tasks.py, which needs nothing but Python 3.10+ (use it where make is missing).
# ARGS go on to the command: make serve STAGE=naive ARGS="--port 8001", make test ARGS="-x".
PYTHON ?= python3
STAGE ?= fast
ARGS ?=

.PHONY: setup serve test model lab bench lint monitor
setup:          ## create .venv, install requirements, train the default model if missing
	$(PYTHON) tasks.py setup
serve:          ## run a stage on 127.0.0.1:8000: make serve STAGE=naive|...|fast (the final)
	$(PYTHON) tasks.py serve --stage $(STAGE) $(ARGS)
test:           ## the whole test suite, notebooks included
	$(PYTHON) tasks.py test $(ARGS)
model:          ## (re)train and export the default model
	$(PYTHON) tasks.py model $(ARGS)
lab:            ## open JupyterLab on the notebooks
	$(PYTHON) tasks.py lab $(ARGS)
bench:          ## load-test every stage and plot the results
	$(PYTHON) tasks.py bench $(ARGS)
lint:           ## ruff check + format check
	$(PYTHON) tasks.py lint
monitor:        ## Prometheus on 127.0.0.1:9090 scraping :8000 (ARGS=--port=8001: another port)
	$(PYTHON) tasks.py monitor $(ARGS)
