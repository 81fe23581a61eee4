# Every target creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch lies on these machines' disk; an unpinned torch pulls a CUDA build.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.atari-dt-installed
DEMO_DIR ?= runs/demo
COMPARE_DIR ?= runs/demo_compare
COMPARE_GAMES ?= seaquest breakout
RUN ?= $(DEMO_DIR)/train
PORT ?= 8501

.PHONY: install demo demo-compare app test test-portable bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# End to end on a small real sample: real ALE Seaquest frames written as DQN-replay logs,
# converted to an episode store, verified, summarised and plotted; a collection with the
# expert-to-random policy mixture (RAM, object positions, behaviours); a small DT trained on it
# with the top 20% of returns held out (~4 min on 2 cores), its target-return sweep
# (runs/demo/train/eval/sweep.png), RTG scan (runs/demo/train/scan/), pixel attribution
# (runs/demo/explain/), transformer analysis (runs/demo/analysis/) and the RTG-extrapolation
# study (runs/demo/train/study/report.html; its rollouts may run 2,000 steps, twice the
# collection's episode cap, so the cap does not bound what a high target can achieve).
demo: $(STAMP)
	$(BIN)/atari-dt collect --game Seaquest --policy random --steps 4000 --format dqn-replay --capacity 1500 --seed 0 --out $(DEMO_DIR)/replay_logs --force
	$(BIN)/atari-dt data convert $(DEMO_DIR)/replay_logs $(DEMO_DIR)/seaquest.h5 --game Seaquest --force
	$(BIN)/atari-dt data verify $(DEMO_DIR)/seaquest.h5
	$(BIN)/atari-dt data info $(DEMO_DIR)/seaquest.h5 --plot $(DEMO_DIR)/returns.png
	$(BIN)/atari-dt data show $(DEMO_DIR)/seaquest.h5 --config configs/data/demo_seaquest.yaml --out $(DEMO_DIR)/window.png
	$(BIN)/atari-dt collect --config configs/collect/seaquest.yaml --steps 40000 --max-episode-steps 1000 --out $(DEMO_DIR)/collect_seaquest.h5 --force
	$(BIN)/atari-dt data info $(DEMO_DIR)/collect_seaquest.h5 --reward-units raw --plot $(DEMO_DIR)/collect_returns.png
	$(BIN)/atari-dt train configs/train/demo_seaquest.yaml --data $(DEMO_DIR)/collect_seaquest.h5 --set data.max_return_quantile=0.8 --out $(DEMO_DIR)/train --force
	$(BIN)/atari-dt eval $(DEMO_DIR)/train --video 1
	$(BIN)/atari-dt scan $(DEMO_DIR)/train --rtg 0:1600:33 --contexts 128
	$(BIN)/atari-dt attribute $(DEMO_DIR)/train --episode 3 --step 200 --baseline blur --gif 20 --out $(DEMO_DIR)/explain
	$(BIN)/atari-dt analyze $(DEMO_DIR)/train --episode 3 --step 200 --contexts 128 --out $(DEMO_DIR)/analysis
	$(BIN)/atari-dt study $(DEMO_DIR)/train --steer --max-episode-steps 2000
	@echo "open the study's report: $(DEMO_DIR)/train/study/report.html"

# Two games side by side (not part of `make demo`; 9 min 47 s alone on 2 cores): for each game its
# expert-to-random mixture is collected (40k steps, Pong 200k, episodes capped at 1,000 steps), a demo DT
# trained on it with the top 20% of returns held out (configs/train/demo_<game>.yaml), studied,
# and the studies compared: $(COMPARE_DIR)/compare/compare.html (table.csv, table.json).
demo-compare: $(STAMP)
	for game in $(COMPARE_GAMES); do \
		steps=40000; [ $$game = pong ] && steps=200000; \
		$(BIN)/atari-dt collect --config configs/collect/$$game.yaml --steps $$steps --max-episode-steps 1000 --out $(COMPARE_DIR)/$$game/collect.h5 --force || exit 1; \
		$(BIN)/atari-dt train configs/train/demo_$$game.yaml --data $(COMPARE_DIR)/$$game/collect.h5 --set data.max_return_quantile=0.8 --out $(COMPARE_DIR)/$$game/train --force || exit 1; \
	done
	$(BIN)/atari-dt compare $(foreach game,$(COMPARE_GAMES),$(COMPARE_DIR)/$(game)/train) --study-missing --max-episode-steps 2000 --out $(COMPARE_DIR)/compare
	@echo "open the comparison: $(COMPARE_DIR)/compare/compare.html"

# The interactive app on a trained run (default: make demo's), on 127.0.0.1:$(PORT); Ctrl-C stops it.
app: $(STAMP)
	$(BIN)/python -c "import streamlit" 2>/dev/null || $(BIN)/python -m pip install --quiet -e ".[app]"
	$(BIN)/atari-dt app $(RUN) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs

# The suite as other CPUs would run it: each kernel set torch has here (ATEN_CPU_CAPABILITY and
# ONEDNN_MAX_CPU_ISA: default, avx2, avx512 where the CPU has it) x 1 and 2 OpenMP threads, and
# test seeds 1 and 2 (tests/portable.py; ~40 min on 2 cores). A test that flips tests a float
# accident. PORTABLE_ARGS="--full" runs every combination; "-- tests/test_x.py" one file.
PORTABLE_ARGS ?=
test-portable: $(STAMP)
	$(BIN)/python tests/portable.py $(PORTABLE_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_collect.py
	$(BIN)/python benchmarks/bench_model.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_rollout.py
	$(BIN)/python benchmarks/bench_attribution.py
	$(BIN)/python benchmarks/bench_study.py
	if [ -f $(RUN)/config.yaml ]; then $(BIN)/python benchmarks/bench_app.py --run $(RUN); \
	else echo "bench_app: skipped, no run at $(RUN) (make demo, or RUN=...)"; fi

lint: $(STAMP)
	$(BIN)/ruff check atari_dt tests benchmarks
	$(BIN)/ruff format --check atari_dt tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format atari_dt tests benchmarks
	$(BIN)/ruff check --fix atari_dt tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
