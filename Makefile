# `make run` and `make test` build .venv on first use; nothing else needs installing by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-slurm bench device-wheels report examples studies clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,datacomp]'
	# img2dataset declares webdataset<0.3 but needs only TarWriter, which the pinned 1.0.2 has
	$(PY) -m pip install -q --no-deps img2dataset==1.47.0
	touch $(STAMP)

run: $(STAMP)            ## the default job: tiny CLIP on 1k pairs of the embedded corpus, CSA, W&B offline
	$(PY) run.py

test: $(STAMP)           ## every CPU test, one pytest-xdist worker per core (GPU tests skip without a GPU; SLURM tests unless MIA_TEST_SLURM=1)
	$(PY) -m pytest -q -n auto --dist loadscope

test-fast: $(STAMP)      ## skip the end-to-end runs
	$(PY) -m pytest -q -n auto --dist loadscope -m "not slow"

test-slurm: $(STAMP)     ## the SLURM tests alone: as root, may apt-get install slurm-wlm munge, starts daemons
	MIA_TEST_SLURM=1 $(PY) -m pytest -q -m slurm

bench: $(STAMP)          ## throughput figures, written as JSON to outputs/bench/
	$(PY) -m benchmarks.bench
	$(PY) -m benchmarks.bench_paramgrad
	$(PY) -m benchmarks.bench_inference

device-wheels: $(STAMP) ## wheels a bare, offline GPU machine lacks, into .whl/ (for benchmarks/device.sh)
	$(PY) -m benchmarks.device_wheels .whl

report: $(STAMP)         ## the sweep report: make report SWEEP=outputs/multiruns/<stamp>
	$(PY) -m mia.report $(SWEEP)

examples: $(STAMP)       ## docs/examples/: results.json and scores.parquet of a fresh debug=small job
	$(PY) -m tools.examples

studies: $(STAMP)        ## the README's list of studies, written from conf/experiment/
	$(PY) -m tools.studies

clean:                   ## job outputs and the cache of corpora / targets / features (not .venv)
	rm -rf outputs/runs outputs/multiruns outputs/bench .cache
