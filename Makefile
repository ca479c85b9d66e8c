# flowctl: make demo | test | lint | bench | data | clean
# GPU users: install your CUDA build of torch into .venv first (see README); nothing here replaces it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0

.PHONY: demo test lint bench data clean install help caloflow caloflow-tiny caloflow-cpu integrate-bench bench-integration \
	caloflow-ds1-tiny caloflow-ds2-tiny caloflow-ds3-tiny caloflow-challenge-bench \
	cathode cathode-tiny cathode-cpu cathode-scan cathode-scan-gpu gaia gaia-tiny gaia-streams

help:
	@echo "make demo   - create $(VENV), install flowctl, train/sample/evaluate the quickstart (~2 min)"
	@echo "make test   - install and run the test suite (~5-10 min on 2 CPU cores)"
	@echo "make lint   - ruff check"
	@echo "make bench  - benchmarks/flows.py (side-by-side with zuko/nflows)"
	@echo "make data   - generate toy data files under data/, calorimeter showers under data/calo/, LHCO-like dijets under data/lhco/"
	@echo "make caloflow-tiny - CaloFlow chain (data, teacher, student, sample, evaluate, classify) in minutes on CPU"
	@echo "make caloflow PARTICLE=eplus - the same chain with the paper settings (GPU-sized)"
	@echo "make caloflow-cpu - the CPU-sized chain behind the README's CaloFlow figures (hours)"
	@echo "make caloflow-ds1-tiny DS1=photons|pions - CaloFlow on a synthetic CaloChallenge DS1 file: teacher, student, sample, evaluate (minutes)"
	@echo "make caloflow-ds2-tiny / caloflow-ds3-tiny - iCaloFlow (layer by layer) on small synthetic DS2 / DS3 files"
	@echo "make caloflow-challenge-bench - ms per shower at batch 10 000 (DS1 photons/pions, DS2; teacher, student; 1 and 2 threads)"
	@echo "make cathode-tiny - all five anomaly methods (CATHODE, ANODE, CWoLa, idealized, supervised) in minutes on CPU"
	@echo "make cathode SEEDS=0,1,2,3,4 - the same with the paper settings (GPU-sized), one run per seed"
	@echo "make cathode-cpu - 5 seeds x 5 methods, CPU-sized (configs/preset/cpu.yaml), default + shifted data"
	@echo "make cathode-scan - injection scan n_sig 3000..300 x 5 seeds, CATHODE/ANODE/CWoLa on data alone (k-fold), CPU preset (many hours)"
	@echo "make gaia-tiny - Gaia stream search (synthetic patch, ANODE, purity) in about a minute on CPU"
	@echo "make gaia   - the same with the realistic settings (21 windows; GPU-sized)"
	@echo "make gaia-streams - ANODE vs CATHODE (+ line search) on tiny patches with 300/150/90 stream stars (~15 min on CPU)"
	@echo "make integrate-bench - flowctl integrate vs MadNIS vs VEGAS vs plain MC at 150k calls, 3 seeds (hours on 1 core; INTEGRATE_BENCH_ARGS=\"--calls 1500000\" for 1.5M)"
	@echo "make clean  - remove outputs/, build artefacts and caches (keeps $(VENV))"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Installs torch only when none is importable (a CUDA build installed beforehand is kept).
install: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -e ".[dev]"

# Each demo is a new run under outputs/quickstart/<timestamp>/; sample/evaluate use the newest.
demo: install
	$(VENV)/bin/flowctl train config=quickstart
	$(VENV)/bin/flowctl sample config=quickstart n=100000
	$(VENV)/bin/flowctl evaluate config=quickstart
	@echo ""
	@echo "Plots (density.png, samples.png, loss.png) are in the plots/ folder of the run printed above;"
	@echo "the numbers are in its metrics.json."

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PIP) install -e ".[dev,bench]"
	$(PY) benchmarks/flows.py
	$(PY) benchmarks/maf_sampling.py $(MAF_SAMPLING_ARGS)

CALO_N ?= 100000
PARTICLE ?= eplus
LHCO_N ?= 1000000

data: install
	$(PY) -m flowctl.data.make_toy --out data/toy
	$(PY) -m flowctl.data.synth --out data/calo --n $(CALO_N)
	$(PY) -m flowctl.data.synth.lhco --out data/lhco --n $(LHCO_N) --signal-fraction 0.001
	$(PY) -m flowctl.data.synth.lhco --out data/lhco/shifted --n $(LHCO_N) --signal-fraction 0.001 --shift 0.1
	$(PY) -m flowctl.data.synth.gaia --out data/gaia

# CaloFlow (README "Calorimeter showers"): Flow I + MAF teacher -> IAF student -> showers -> AUC.
CALO_TINY := outputs/caloflow-tiny
caloflow-tiny: install
	$(PY) -m flowctl.data.synth --out $(CALO_TINY)/data --n 3000 --particles $(PARTICLE)
	rm -rf $(CALO_TINY)/teacher $(CALO_TINY)/student
	$(PY) -m flowctl train config=caloflow_teacher_tiny data.path=$(CALO_TINY)/data/$(PARTICLE).h5 run_dir=$(CALO_TINY)/teacher
	$(PY) -m flowctl evaluate run=$(CALO_TINY)/teacher
	$(PY) -m flowctl distill config=caloflow_student_tiny teacher=$(CALO_TINY)/teacher data.path=$(CALO_TINY)/data/$(PARTICLE).h5 run_dir=$(CALO_TINY)/student
	$(PY) -m flowctl evaluate run=$(CALO_TINY)/student
	$(PY) -m flowctl classify run=$(CALO_TINY)/student truth=$(CALO_TINY)/data/$(PARTICLE)_test.h5

# The CPU-affordable path the README's CaloFlow figures were measured on (hours on 2 cores):
# 30k synthetic showers, Flow II and student at H = 128.
CALO_CPU := outputs/caloflow-cpu-$(PARTICLE)
# The chain behind the README's CPU student rows (teacher 8 epochs, student 5 epochs from the
# teacher's weights, no dropout; ~1.5 hours on 2 cores), results file in benchmarks/results/.
caloflow-cpu: install
	$(PY) benchmarks/calo_student.py --out $(CALO_CPU) --particle $(PARTICLE) --teacher-epochs 8 --teacher-milestones 6 --recipe cosine --student-lr 1e-4 --student-epochs 5

# CaloChallenge geometries (README "Calorimeter showers"): synthetic files in the challenge's
# format, binning XML shipped with flowctl (data.binning=ds1_photons | ds1_pions | ds2 | ds3).
DS1 ?= photons
CC_TINY := outputs/caloflow-challenge-tiny
caloflow-ds1-tiny: install
	$(PY) -m flowctl.data.synth.challenge --dataset ds1_$(DS1) --n 3000 --out $(CC_TINY)/data/ds1_$(DS1).h5
	$(PY) -m flowctl.data.synth.challenge --dataset ds1_$(DS1) --n 1000 --seed 1 --out $(CC_TINY)/data/ds1_$(DS1)_reference.h5
	rm -rf $(CC_TINY)/ds1_$(DS1)
	$(PY) -m flowctl train config=caloflow_ds1_tiny data.path=$(CC_TINY)/data/ds1_$(DS1).h5 data.binning=ds1_$(DS1) run_dir=$(CC_TINY)/ds1_$(DS1)
	$(PY) -m flowctl sample run=$(CC_TINY)/ds1_$(DS1) energies=$(CC_TINY)/data/ds1_$(DS1)_reference.h5
	$(PY) -m flowctl evaluate run=$(CC_TINY)/ds1_$(DS1)
	$(PY) -m flowctl distill run=$(CC_TINY)/ds1_$(DS1)
	$(PY) -m flowctl evaluate run=$(CC_TINY)/ds1_$(DS1)/student

caloflow-ds2-tiny caloflow-ds3-tiny: caloflow-%-tiny: install
	$(PY) -m flowctl.data.synth.challenge --dataset $* --n $(if $(filter ds2,$*),500,120) --out $(CC_TINY)/data/$*.h5
	rm -rf $(CC_TINY)/$*
	$(PY) -m flowctl train config=caloflow_$*_tiny data.path=$(CC_TINY)/data/$*.h5 run_dir=$(CC_TINY)/$*
	$(PY) -m flowctl distill run=$(CC_TINY)/$*
	$(PY) -m flowctl sample run=$(CC_TINY)/$*/student n=100
	$(PY) -m flowctl evaluate run=$(CC_TINY)/$*/student

caloflow-challenge-bench: install
	$(PY) benchmarks/calo_sampling.py --datasets ds1_photons ds1_pions --batch 10000 --reps 1 --threads 1 2
	$(PY) benchmarks/calo_sampling.py --datasets ds2 --batch 10000 --reps 1 --threads 1 2

CALO := outputs/caloflow-$(PARTICLE)
caloflow: install
	test -f data/calo/$(PARTICLE).h5 || $(PY) -m flowctl.data.synth --out data/calo --n $(CALO_N) --particles $(PARTICLE)
	$(PY) -m flowctl train config=caloflow_teacher data.particle=$(PARTICLE) run_dir=$(CALO)/teacher
	$(PY) -m flowctl evaluate run=$(CALO)/teacher
	$(PY) -m flowctl distill config=caloflow_student teacher=$(CALO)/teacher data.particle=$(PARTICLE) run_dir=$(CALO)/student
	$(PY) -m flowctl evaluate run=$(CALO)/student
	$(PY) -m flowctl classify run=$(CALO)/student truth=data/calo/$(PARTICLE)_test.h5

# Neural importance sampling vs VEGAS vs plain MC (README "Integration"); INTEGRATE_BENCH_ARGS
# e.g. "--only camel4,camel8 --seeds 3 --jobs 2".
INTEGRATE_BENCH_ARGS ?=
integrate-bench bench-integration: install
	$(PIP) install -e ".[dev,peers]"
	$(PY) benchmarks/integration.py --seeds 3 $(INTEGRATE_BENCH_ARGS)

clean:
	rm -rf outputs multirun build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

# Anomaly detection (README "Anomaly detection"): every method writes scores.npz; `evaluate`
# gathers all runs on the same data into one ROC/SIC table (median, 16-84 % over seeds).
LHCO_TINY := data/lhco-tiny
cathode-tiny: install
	$(PY) -m flowctl.data.synth.lhco --out $(LHCO_TINY) --n 200000 --signal-fraction 0.001
	for m in anode cwola idealized supervised; do $(PY) -m flowctl train config=$${m}_tiny || exit 1; done
	$(PY) -m flowctl train config=cathode_tiny
	$(PY) -m flowctl sample config=cathode_tiny
	$(PY) -m flowctl classify config=cathode_tiny
	$(PY) -m flowctl evaluate config=cathode_tiny

SEEDS ?= 0,1,2,3,4
ANOMALY_ARGS ?=
cathode: install
	test -f data/lhco/events_anomalydetection_v2.features.h5 || $(PY) -m flowctl.data.synth.lhco --out data/lhco --n $(LHCO_N) --signal-fraction 0.001
	for m in cwola idealized supervised; do $(PY) -m flowctl train config=$$m -m seed=$(SEEDS) $(ANOMALY_ARGS) || exit 1; done
	$(PY) -m flowctl train config=cathode -m seed=$(SEEDS) $(ANOMALY_ARGS)
	sweep=$$(ls -td outputs/cathode/*/ | head -1); for r in $$sweep[0-9]*/; do \
	  $(PY) -m flowctl sample run=$$r && $(PY) -m flowctl classify run=$$r && \
	  $(PY) -m flowctl train config=anode sideband_run=$$r seed=$$($(PY) -c "import yaml; print(yaml.safe_load(open('$${r}config.yaml'))['seed'])") $(ANOMALY_ARGS) || exit 1; done
	$(PY) -m flowctl evaluate config=cathode

cathode-cpu: install
	test -f data/lhco/events_anomalydetection_v2.features.h5 || $(PY) -m flowctl.data.synth.lhco --out data/lhco --n $(LHCO_N) --signal-fraction 0.001
	test -f data/lhco/shifted/events_anomalydetection_v2.features.h5 || $(PY) -m flowctl.data.synth.lhco --out data/lhco/shifted --n $(LHCO_N) --signal-fraction 0.001 --shift 0.1
	$(PY) benchmarks/anomaly.py --data data/lhco --tag default --preset cpu
	$(PY) benchmarks/anomaly.py --data data/lhco/shifted --tag shifted --preset cpu

# Signal-injection scan on data alone (README "Anomaly detection", docs/anomaly.md): one R&D-format
# file with 3000 signal events; each point keeps data.n_sig of them and scores the SR out-of-fold.
LHCO_SCAN := data/lhco-scan
SCAN_SEEDS ?= 0 1 2 3 4
SCAN_JOBS ?= 2
SCAN_NSIG ?= 3000 1500 1000 600 300
cathode-scan: install
	test -f $(LHCO_SCAN)/events_anomalydetection_v2.features.h5 || $(PY) -m flowctl.data.synth.lhco --out $(LHCO_SCAN) --n $(LHCO_N) --signal-fraction 0.003 --n-extra-bkg 1 --n-extra-sig 1
	$(PY) benchmarks/anomaly_scan.py --data $(LHCO_SCAN)/events_anomalydetection_v2.features.h5 --tag cpu --preset scan_cpu --n-sig $(SCAN_NSIG) --seeds $(SCAN_SEEDS) --jobs $(SCAN_JOBS)

cathode-scan-gpu: install
	test -f $(LHCO_SCAN)/events_anomalydetection_v2.features.h5 || $(PY) -m flowctl.data.synth.lhco --out $(LHCO_SCAN) --n $(LHCO_N) --signal-fraction 0.003 --n-extra-bkg 1 --n-extra-sig 1
	$(PY) benchmarks/anomaly_scan.py --data $(LHCO_SCAN)/events_anomalydetection_v2.features.h5 --tag paper --preset none --n-sig $(SCAN_NSIG) --seeds $(SCAN_SEEDS) --extra classifier.device=cuda

# Gaia stellar streams (README "Stellar streams in Gaia"): synthetic patch -> ANODE -> purity.
GAIA_TINY := outputs/gaia-tiny
gaia-tiny: install
	$(PY) -m flowctl.data.synth.gaia --out $(GAIA_TINY)/data --name patch_tiny --n-field 40000 --n-stream 400
	rm -rf $(GAIA_TINY)/run
	$(PY) -m flowctl train config=gaia_anode_tiny data.path=$(GAIA_TINY)/data/patch_tiny.h5 run_dir=$(GAIA_TINY)/run
	$(PY) -m flowctl evaluate run=$(GAIA_TINY)/run

gaia-streams: install
	$(PY) benchmarks/gaia_streams.py --tag tiny --n-field 30000 --n-stream 300 150 90 --config tiny

gaia: install
	test -f data/gaia/patch.h5 || $(PY) -m flowctl.data.synth.gaia --out data/gaia --n-field 400000 --n-stream 1000
	$(PY) -m flowctl train config=gaia_anode data.path=data/gaia/patch.h5
	$(PY) -m flowctl evaluate config=gaia_anode
