# The map of the project: data -> runs -> figures -> HTML (see README.md).
#
#   make paper [PROFILE=smoke|default|paper] [-j N]   everything below, in order
#   make setup      .venv with requirements.txt, the project installed (pip install -e .), a Jupyter kernel "aevb"
#   make data       data files into $(VAE_DATA_DIR), checksums verified
#   make runs       one executed notebooks/train.ipynb per run of the grid (aevb/grid.py) -> $(RUNS)/<dataset>/<run>/
#   make figures    the figure notebooks, which only read runs     -> $(FIGURES)/*.png|pdf|csv, findings/*.json
#   make html       every executed notebook as HTML, and index.html -> $(BUILD)/html/
#   make results    the verdicts and headline findings as Markdown -> $(RESULTS) (default profile: RESULTS.md,
#                   and every figure as a small PNG into the committed figures/, with figures/provenance.json)
#   make test       every test (pytest, including a smoke `make paper` into a temporary folder); the
#                   browser test needs Chromium, installed here where it can be (root with apt-get)
#   make test-fast  the unit tests alone, for use while editing (under two minutes)
#   make golden     rewrite the golden values of tests/test_golden.py after a change that moves them on purpose
#   make lab        JupyterLab in the project's environment, rooted at the repository (root too)
#   make bench      training and evaluation throughput vs the matmul ceiling -> bench/results.json|md
#
# One run alone: make $(RUNS)/mnist/aevb_z20_kingma_s1/metrics.json [PROFILE=...]
# On a cluster: LAUNCH="srun --gres=gpu:1" make -j 40 runs PROFILE=paper   (each run one job; see docs/cluster.md)
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KERNEL := aevb
export VAE_DATA_DIR ?= $(CURDIR)/data

# Each profile has its own runs, figures and build folders, so profiles never overwrite each other.
PROFILE ?= default
RUNS ?= runs/$(PROFILE)
FIGURES ?= figures/$(PROFILE)
BUILD ?= build/$(PROFILE)
# The default profile's results are the ones committed (RESULTS.md, the README's summary block and the figures
# in figures/ as small PNGs); figures/<profile>/ holds each profile's full-size figures and is not committed.
RESULTS ?= $(if $(filter default,$(PROFILE)),RESULTS.md,$(BUILD)/RESULTS.md)
PUBLISH_FIGURES ?= $(if $(filter default,$(PROFILE)),figures)
NB := $(BUILD)/notebooks
GRID_FILE ?=
LAUNCH ?=

# ---- the experiment grid (aevb/grid.py) says which runs exist and which notebook reads which -----
# Read-only at parse time: it needs Python's standard library alone, so it works before .venv exists.
GRID := $(PYTHON) -m aevb.grid $(if $(GRID_FILE),--grid $(GRID_FILE))
ifeq ($(filter $(PROFILE),smoke default paper),)
$(error PROFILE=$(PROFILE) is not known; expected smoke, default or paper)
endif
ALL_RUNS := $(shell $(GRID) runs --profile $(PROFILE))
ifeq ($(ALL_RUNS),)
$(error $(GRID) runs listed no run: is aevb/grid.py (or GRID_FILE) readable?)
endif
done = $(patsubst %,$(RUNS)/%/metrics.json,$1)
reads = $(call done,$(shell $(GRID) runs --notebook $1 --profile $(PROFILE)))

MAKE_STARTED := $(shell date +%s)  # when this make call started: RESULTS.md says how long it took
# Under make -j N each job gets nproc/N PyTorch threads, so N jobs share the cores.
NPROC := $(shell nproc 2>/dev/null || echo 1)
JOBS = $(if $(filter -j,$(MAKEFLAGS)),$(NPROC),$(or $(patsubst -j%,%,$(filter -j%,$(MAKEFLAGS))),1))
THREADS = $(shell echo $$(( $(NPROC) / $(JOBS) > 0 ? $(NPROC) / $(JOBS) : 1 )))
RUN_NOTEBOOK = env OMP_NUM_THREADS=$(THREADS) $(PY) scripts/run_notebook.py

.PHONY: paper setup strip-outputs data runs figures html results test test-fast golden browser lab clean-build bench plan FORCE

paper: html results
	@echo "make paper ($(PROFILE)): figures in $(FIGURES)/, results in $(RESULTS), open $(BUILD)/html/index.html"

# The kernel is registered again whenever it does not launch this venv's python (a moved or copied venv).
KERNEL_JSON := $(VENV)/share/jupyter/kernels/$(KERNEL)/kernel.json
setup: $(VENV)/.installed
	@grep -qF '"$(abspath $(PY))"' $(KERNEL_JSON) 2>/dev/null || \
		$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (aevb)"
	@$(MAKE) --no-print-directory strip-outputs
# Notebooks are committed without outputs: nbstripout as this clone's git filter for *.ipynb (.gitattributes),
# keeping the cells' ids; `git add` then stages a notebook saved in JupyterLab without its outputs, while the
# file on disk keeps them. Outside a git clone (an unpacked archive) there is nothing to set up.
NBSTRIPOUT = $(abspath $(PY)) -m nbstripout --keep-id
strip-outputs:
	@if git -C $(CURDIR) rev-parse --git-dir >/dev/null 2>&1 && \
	  [ "$$(git -C $(CURDIR) config filter.nbstripout.clean)" != "$(NBSTRIPOUT)" ]; then \
		git -C $(CURDIR) config filter.nbstripout.clean "$(NBSTRIPOUT)" && \
		git -C $(CURDIR) config filter.nbstripout.smudge cat && \
		git -C $(CURDIR) config diff.ipynb.textconv "$(NBSTRIPOUT) -t" && \
		echo "git filter nbstripout set: notebooks are staged without their outputs (.gitattributes)"; fi
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $@

data: setup
	$(PY) scripts/fetch_data.py

# ---- runs ------------------------------------------------------------------------------------------
# A run is finished when its metrics.json exists (train_run writes it last). Its .params file holds its
# parameters and the hash of the code that trains (aevb.runs.code_hash); the grid rewrites it only when
# either changed, so exactly the runs whose parameters or code changed are retrained (replace_stale).
# (A reused run's metrics.json is touched so that make sees it up to date.)
# The terminal shows one line per finished run or figure notebook ("k of n done, elapsed, about T
# left"), and a failed step's last lines; each step's own output is in a .log beside its executed notebook.
runs: $(call done,$(ALL_RUNS))
$(RUNS)/%.params: FORCE
	@$(GRID) params $* --profile $(PROFILE) --write $@
$(RUNS)/%/metrics.json: $(RUNS)/%.params | setup data plan
	@$(STEP) run $* --log $(NB)/train_$(subst /,_,$*).log --notebook $(NB)/train_$(subst /,_,$*).ipynb -- \
		$(LAUNCH) $(RUN_NOTEBOOK) notebooks/train.ipynb $(NB)/train_$(subst /,_,$*).ipynb --params $< \
		-p run_dir $(RUNS)/$* -p replace_stale True -p threads $(THREADS) -p progress lines
	@touch $@
	@$(STEP) done $* --run-dir $(RUNS)/$*
FORCE:
.PRECIOUS: $(RUNS)/%.params

# ---- before any step: how many runs this call trains and reuses, which figure notebooks it runs, and an
# estimate of its time here at this -j, from each run's budget and rates measured here by a probe of a few
# seconds (aevb/progress.py). `+`: make -n prints it too (and writes nothing).
STEP = $(PY) -m aevb.progress --build $(BUILD) --started $(MAKE_STARTED)
plan: | setup
	+@$$(test -x $(PY) && echo $(PY) || echo $(PYTHON)) -m aevb.progress --build $(BUILD) --started $(MAKE_STARTED) \
		plan --profile $(PROFILE) \
		--runs $(RUNS) --figures $(FIGURES) --jobs $(JOBS) --threads $(THREADS) --goals "$(MAKECMDGOALS)" \
		--python $(PY) --figure-code "$(FIGURE_CODE) $(PAPER_SCALE_RUNS)" $(if $(GRID_FILE),--grid $(GRID_FILE)) \
		$(if $(findstring n,$(firstword -$(MAKEFLAGS))),--dry-run)

# ---- figures: each notebook (the grid's NOTEBOOK_RUNS) depends on the runs it reads and on the code
# and published numbers it reads. Its outputs are declared (aevb/figures.py: FIGURES, CSV_TABLES and its
# findings file) as one grouped target, so a deleted figure re-executes the notebook that makes it.
FIGURE_NOTEBOOKS := $(shell $(GRID) notebooks)
# the code they read: every project module a figure notebook imports, directly or through another
# (aevb/imports.py), and the published numbers
FIGURE_CODE := $(if $(FIGURE_NOTEBOOKS),$(shell $(PYTHON) -m aevb.imports $(FIGURE_NOTEBOOKS:%=notebooks/%.ipynb))) \
	published_numbers.csv
ifneq ($(FIGURE_NOTEBOOKS),)
ifeq ($(filter aevb/figures.py,$(FIGURE_CODE)),)
$(error $(PYTHON) -m aevb.imports did not list the figure notebooks' code)
endif
endif
# the published paper-scale runs (aevb/paper_scale.py), which judge the rows at 10^8: a run published
# reruns the notebooks that read the scorecard
PAPER_SCALE_RUNS := $(wildcard results/paper-scale/*/*/*.json results/paper-scale/*/*/history.csv)
# (The stamp in $(BUILD)/done/ is written only when the notebook succeeded and wrote every output it declares.)
outputs = $(BUILD)/done/$1 $(addprefix $(FIGURES)/,$(shell $(PYTHON) -m aevb.figures outputs $1))
FIGURE_OUTPUTS := $(foreach n,$(FIGURE_NOTEBOOKS),$(call outputs,$n))
define figure_rule
$(call outputs,$1) &: notebooks/$1.ipynb $(FIGURE_CODE) $(PAPER_SCALE_RUNS) $(call reads,$1) | setup plan
	@$$(STEP) run notebooks/$1.ipynb --log $(NB)/$1.log --notebook $(NB)/$1.ipynb -- \
		$$(RUN_NOTEBOOK) notebooks/$1.ipynb $(NB)/$1.ipynb -p runs_dir $(RUNS) -p figures_dir $(FIGURES) -p profile $(PROFILE)
	@$(PYTHON) -m aevb.figures check $1 $(FIGURES)
	@mkdir -p $(BUILD)/done && touch $(BUILD)/done/$1
	@$$(STEP) done notebooks/$1.ipynb
endef
$(foreach n,$(FIGURE_NOTEBOOKS),$(eval $(call figure_rule,$n)))
figures: $(FIGURE_OUTPUTS)

html: $(BUILD)/html/index.html
$(BUILD)/html/index.html: $(call done,$(ALL_RUNS)) $(FIGURE_OUTPUTS) scripts/build_html.py \
		$(shell $(PYTHON) -m aevb.imports scripts/build_html.py) | setup
	$(PY) scripts/build_html.py --profile $(PROFILE) --runs $(RUNS) --figures $(FIGURES) \
		--notebooks $(NB) --html $(BUILD)/html

# The verdicts per paper and the headline findings beside their figures, with their provenance (profile,
# commit, code hash, device, date); the default profile's also refresh README.md's summary block and the
# committed figures/*.png with figures/provenance.json (their size is stated there).
results: $(RESULTS)
$(RESULTS): $(FIGURE_OUTPUTS) scripts/write_results.py $(shell $(PYTHON) -m aevb.imports scripts/write_results.py) | setup
	$(PY) scripts/write_results.py --profile $(PROFILE) --runs $(RUNS) --figures $(FIGURES) --out $@ \
		$(if $(filter RESULTS.md,$(RESULTS)),--readme README.md) $(if $(PUBLISH_FIGURES),--publish-figures $(PUBLISH_FIGURES)) \
		--make-started $(MAKE_STARTED) --jobs $(JOBS)

# ---- tests and tools ---------------------------------------------------------------------------------
test: setup data browser
	$(PY) -m pytest -q tests

test-fast: setup data
	$(PY) -m pytest -q -m "not slow" tests

# The golden values of tests/test_golden.py (four tiny runs), rewritten from the code as it is: after a change that
# moves the numbers on purpose; `git diff tests/golden` then shows by how much.
golden: setup data
	$(PY) -m pytest -q tests/test_golden.py --refresh-golden

# Headless Chromium and its driver for the rendered-page test: Debian's packages where this user may install
# them (root with apt-get, as in CI); elsewhere the test is skipped with a message naming what to install.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "make test: no chromium and chromedriver here, and no root to install them: the browser test" \
		"will be skipped. To run it, install both (Debian/Ubuntu: apt-get install chromium chromium-driver;" \
		"macOS: brew install --cask chromium and brew install chromedriver)."; fi

# Samples/s of vae_core's loops beside a pytorch/examples-style loop, at batch 100, on this machine;
# run it on an otherwise idle machine. BENCH_ARGS="--threads 1" times one core's worth (a make -j job).
BENCH_ARGS ?=
bench: setup data
	$(PY) bench/bench.py $(BENCH_ARGS)

# Rooted at the repository (runs/, figures/ and build/<profile>/notebooks/ open from its file browser); as
# root too (a container, a cloud VM), where JupyterLab needs --allow-root. LAB_ARGS: more options (--port 8890).
LAB_ARGS ?=
lab: setup data
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR) $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean-build:
	rm -rf $(BUILD) $(FIGURES)
