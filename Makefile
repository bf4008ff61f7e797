# The map of the project: data -> runs -> figures -> HTML (see README.md).
#
#   make paper [PROFILE=smoke|default|paper] [-j N]   everything below, in order
#   make setup    .venv with requirements.txt and a Jupyter kernel named "aevb"
#   make data     data files into $(VAE_DATA_DIR), checksums verified
#   make runs     one executed notebooks/train.ipynb per run of the sweeps -> $(RUNS)/<dataset>/<run>/
#   make figures  the figure notebooks, which only read runs     -> $(FIGURES)/*.png|pdf|csv
#   make html     every executed notebook as HTML, and index.html -> $(BUILD)/html/
#   make test     the tests (pytest, including a smoke `make paper` into a temporary folder)
#   make lab      JupyterLab in the project's environment
#   make bench    training and evaluation throughput vs the matmul ceiling -> bench/results.json|md
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KERNEL := aevb
export VAE_DATA_DIR ?= $(CURDIR)/data

PROFILE ?= default
RUNS ?= runs/$(PROFILE)
FIGURES ?= figures
BUILD ?= build
NB := $(BUILD)/notebooks

# ---- profiles change budgets, never code -----------------------------------------------------
# FIG3_BUDGET also sizes the log p(x) estimates: on the first log_px_points train and test points.
# IS_BUDGET: the test log-likelihood by importance sampling of the main MNIST runs (Nz = 20).
ifeq ($(PROFILE),smoke)  # every notebook end to end in minutes: tiny data, few steps
REPORT_BUDGET := -p samples 2000 -p train_size 1000 -p test_size 200 -p eval_points 3
MNIST_BUDGET := $(REPORT_BUDGET) -p lr_trial_samples 500
FREY_BUDGET := -p samples 2000 -p test_size 100 -p eval_points 3 -p lr_trial_samples 500
FIG3_BUDGET := -p samples 2000 -p test_size 200 -p eval_points 1 -p log_px_points 10 -p log_px_k 100
BURDA_BUDGET := $(REPORT_BUDGET) -p is_points 20 -p is_k 100
IS_BUDGET := -p is_points 20 -p is_k 100
else ifeq ($(PROFILE),default)  # the report's 50 epochs (3x10^6 samples) for MNIST: about an hour on 2 cores
REPORT_BUDGET := -p samples 3000000
MNIST_BUDGET := -p samples 3000000
FREY_BUDGET := -p samples 1000000
FIG3_BUDGET := -p samples 300000 -p eval_points 6 -p log_px_points 100 -p log_px_k 500
BURDA_BUDGET := -p samples 1000000 -p is_points 1000 -p is_k 5000
IS_BUDGET := -p is_points 1000 -p is_k 1000
else ifeq ($(PROFILE),paper)  # the papers' budgets (10^8 samples per run): a machine with a GPU
REPORT_BUDGET := -p samples 3000000
MNIST_BUDGET := -p samples 100000000 -p checkpoint_every 5000000
FREY_BUDGET := -p samples 100000000 -p checkpoint_every 5000000
FIG3_BUDGET := -p samples 60000000 -p checkpoint_every 5000000 -p log_px_points 1000 -p log_px_k 5000
BURDA_BUDGET := -p samples 196800000 -p checkpoint_every 5000000 -p is_points 10000 -p is_k 5000
IS_BUDGET := -p is_points 10000 -p is_k 5000
else
$(error PROFILE=$(PROFILE) is not known; expected smoke, default or paper)
endif

# ---- protocols: the setups the papers describe, per dataset ---------------------------------
# report: the replication report's notebook as it ran (continuous MNIST, 784-500-Nz tanh, Adam 1e-3,
#   50 epochs in every profile but smoke)
PROTOCOL_mnist_report := -p binarize none -p hidden "[500]" -p optimizer adam -p lr 0.001 -p weight_prior False
BUDGET_mnist_report = $(REPORT_BUDGET)
# kingma: Kingma & Welling's (Adagrad with the step chosen from {0.01, 0.02, 0.1} on the training set,
#   N(0, I) prior on the parameters; 500 tanh units for MNIST, 200 and a Gaussian decoder for Frey Face)
KINGMA := -p optimizer adagrad -p lr_choices "[0.01, 0.02, 0.1]" -p weight_prior True
PROTOCOL_mnist_kingma := -p binarize none -p hidden "[500]" $(KINGMA)
PROTOCOL_frey_kingma := -p hidden "[200]" $(KINGMA)
BUDGET_mnist_kingma = $(MNIST_BUDGET)
BUDGET_frey_kingma = $(FREY_BUDGET)
# fig3n<N>: Kingma & Welling's Figure 3 (Nz 3, 100 tanh units, Adagrad 0.02 for all three algorithms,
#   N(0, I) prior, the first N training points)
FIG3 := -p binarize none -p hidden "[100]" -p optimizer adagrad -p lr 0.02 -p weight_prior True
PROTOCOL_mnist_fig3n1000 := $(FIG3) -p train_size 1000
PROTOCOL_mnist_fig3n50000 := $(FIG3) -p train_size 50000
BUDGET_mnist_fig3n1000 = $(FIG3_BUDGET)
BUDGET_mnist_fig3n50000 = $(FIG3_BUDGET)
# burda: Burda et al.'s VAE (dynamically binarized MNIST, 784-200-200-50 tanh, Adam, minibatch 20; its
#   3280 passes only in the paper profile), test log-likelihood by importance sampling
PROTOCOL_mnist_burda := -p binarize dynamic -p hidden "[200, 200]" -p batch_size 20 -p optimizer adam \
	-p lr 0.001 -p weight_prior False
BUDGET_mnist_burda = $(BURDA_BUDGET)

# ---- the runs: <dataset>/<algorithm>_z<Nz>_<protocol>_s<seed> ---------------------------------
# report: its latent sweep (AEVB), and its Table 1 (Nz = 20) with 3 seeds of AEVB and of wake-sleep
REPORT_RUNS := $(foreach z,2 3 5 10,mnist/aevb_z$(z)_report_s1) \
	$(foreach a,aevb wake_sleep,$(foreach s,1 2 3,mnist/$(a)_z20_report_s$(s)))
# Kingma & Welling's Figure 2: AEVB and wake-sleep for each Nz (listed first: the longest runs start first under -j)
KINGMA_RUNS := $(foreach a,aevb wake_sleep,$(foreach z,3 5 10 20 200,mnist/$(a)_z$(z)_kingma_s1))
FREY_RUNS := $(foreach a,aevb wake_sleep,$(foreach z,2 5 10 20,frey/$(a)_z$(z)_kingma_s1))
FIG3_RUNS := $(foreach n,1000 50000,$(foreach a,aevb wake_sleep mcem,mnist/$(a)_z3_fig3n$(n)_s1))
BURDA_RUNS := mnist/aevb_z50_burda_s1
ALL_RUNS := $(KINGMA_RUNS) $(REPORT_RUNS) $(FREY_RUNS) $(FIG3_RUNS) $(BURDA_RUNS)
done = $(addprefix $(RUNS)/,$(addsuffix /metrics.json,$1))
RUN_DONE := $(call done,$(ALL_RUNS))

# fields of a run: mnist/aevb_z20_report_s1 -> mnist, aevb, 20, report, 1
run_dataset = $(firstword $(subst /, ,$1))
run_algorithm = $(firstword $(subst _z, ,$(notdir $1)))
run_fields = $(subst _, ,$(word 2,$(subst _z, ,$(notdir $1))))
run_nz = $(word 1,$(call run_fields,$1))
run_protocol = $(word 2,$(call run_fields,$1))
run_key = $(call run_dataset,$1)_$(call run_protocol,$1)
# the main MNIST runs (Nz = 20 of the report's and Kingma's protocols) also get a test log-likelihood
run_is = $(if $(filter mnist_report_20 mnist_kingma_20,$(call run_key,$1)_$(call run_nz,$1)),$(IS_BUDGET))
params = -p dataset $(call run_dataset,$1) -p protocol $(call run_protocol,$1) $(PROTOCOL_$(call run_key,$1)) \
	$(BUDGET_$(call run_key,$1)) $(call run_is,$1) -p algorithm $(call run_algorithm,$1) \
	-p latent_dim $(call run_nz,$1) -p seed $(patsubst s%,%,$(word 3,$(call run_fields,$1)))

# Under make -j N each job gets nproc/N PyTorch threads, so N jobs share the cores.
NPROC := $(shell nproc 2>/dev/null || echo 1)
JOBS = $(if $(filter -j,$(MAKEFLAGS)),$(NPROC),$(or $(patsubst -j%,%,$(filter -j%,$(MAKEFLAGS))),1))
THREADS = $(shell echo $$(( $(NPROC) / $(JOBS) > 0 ? $(NPROC) / $(JOBS) : 1 )))
RUN_NOTEBOOK = OMP_NUM_THREADS=$(THREADS) $(PY) scripts/run_notebook.py

.PHONY: paper setup data runs figures html test browser lab clean-build bench

paper: html
	@echo "make paper ($(PROFILE)): figures in $(FIGURES)/, open $(BUILD)/html/index.html"

# The kernel is registered again whenever it does not launch this venv's python (a moved or copied venv).
KERNEL_JSON := $(VENV)/share/jupyter/kernels/$(KERNEL)/kernel.json
setup: $(VENV)/.installed
	@grep -qF '"$(abspath $(PY))"' $(KERNEL_JSON) 2>/dev/null || \
		$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (aevb)"
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

data: setup
	$(PY) scripts/fetch_data.py

# A run is finished when its metrics.json exists (the notebook writes it last). Each run also has a
# params file holding its exact parameters and vae_core's CODE_VERSION, rewritten only when they
# change: a run whose parameters changed is retrained (replace_stale), an unchanged one never is.
# (A reused run's metrics.json is touched so that Make sees it up to date.)
CODE_VERSION := $(shell sed -n 's/^CODE_VERSION = //p' vae_core.py)
write_params = $(shell mkdir -p $(dir $1) && p='$2 code_version=$(CODE_VERSION)' && \
	{ [ "$$(cat $1 2>/dev/null)" = "$$p" ] || printf '%s' "$$p" > $1; })
ifeq ($(filter setup data test browser lab clean-build bench,$(MAKECMDGOALS)),)
$(foreach r,$(ALL_RUNS),$(call write_params,$(RUNS)/$r.params,$(call params,$r)))
endif

runs: $(RUN_DONE)
$(RUNS)/%/metrics.json: $(RUNS)/%.params | setup data
	$(RUN_NOTEBOOK) notebooks/train.ipynb $(NB)/train_$(subst /,_,$*).ipynb $(call params,$*) \
		-p run_dir $(RUNS)/$* -p replace_stale True -p threads $(THREADS) -p progress lines
	touch $@

# Figure notebooks read runs only; each depends on the runs it reads. (Captions: project.FIGURES.)
#   notebooks/replication_report.ipynb   report_fig1..5, report_table1
#   notebooks/kingma2013.ipynb           kingma_fig2, kingma_fig4 (MNIST, Frey), kingma_fig5,
#                                        latent_scatter_mnist, reconstructions_mnist, interpolation_mnist
#   notebooks/marginal_likelihood.ipynb  kingma_fig3_marginal_likelihood
#   notebooks/scorecard.ipynb            scorecard.csv (every published number beside ours), test_log_likelihood.csv
FIGURE_NOTEBOOKS := replication_report kingma2013 marginal_likelihood scorecard
FIGURE_DONE := $(FIGURE_NOTEBOOKS:%=$(BUILD)/done/%)
$(BUILD)/done/replication_report: $(call done,$(REPORT_RUNS))
$(BUILD)/done/kingma2013: $(call done,$(REPORT_RUNS) $(KINGMA_RUNS) $(FREY_RUNS))
$(BUILD)/done/marginal_likelihood: $(call done,$(FIG3_RUNS))
$(BUILD)/done/scorecard: $(call done,$(ALL_RUNS)) published_numbers.csv
figures: $(FIGURE_DONE)
$(BUILD)/done/%: notebooks/%.ipynb project.py | setup
	$(RUN_NOTEBOOK) $< $(NB)/$*.ipynb -p runs_dir $(RUNS) -p figures_dir $(FIGURES)
	mkdir -p $(@D) && touch $@

html: $(BUILD)/html/index.html
$(BUILD)/html/index.html: $(RUN_DONE) $(FIGURE_DONE) scripts/build_html.py project.py | setup
	$(PY) scripts/build_html.py --profile $(PROFILE) --runs $(RUNS) --figures $(FIGURES) \
		--notebooks $(NB) --html $(BUILD)/html

test: setup data browser
	$(PY) -m pytest -q tests

# Headless Chromium and its driver for the rendered-page test: Debian's packages (CI runs as root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# Samples/s of vae_core's loops beside a pytorch/examples-style loop, at batch 100, on this machine;
# run it on an otherwise idle machine. BENCH_ARGS="--threads 1" times one core's worth (a make -j job).
BENCH_ARGS ?=
bench: setup data
	$(PY) bench/bench.py $(BENCH_ARGS)

lab: setup data
	$(VENV)/bin/jupyter lab notebooks/

clean-build:
	rm -rf $(BUILD)
