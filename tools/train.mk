# tools/train.mk: training runs of the C trainer (dsv2 train), included by the top Makefile.
#
#   make train-demo    trains models/train-demo/config.json (a 0.5M-parameter DeepSeek-V2: MLA with
#                      q compression and YaRN, a dense layer, then two MoE layers with a shared expert
#                      and group-limited routing) on the King James Bible (Debian's bible-kjv;
#                      without it the book's own text) with the tiny-kjv tokenizer, on one core;
#                      prints the wall time, generates from the result and draws the loss curve
#                      to build/train-demo/loss.png (gnuplot)
#   make train-ablation  the balance losses off / on / ten times stronger, short runs (see below)
#   make train-ablation-attention  the attention ablation (a) of chapter 9 again: MHA, GQA, MQA
#                      and MLA from three seeds each (tools/train_ablations.sh, about 40 s a run on
#                      one core), each log compared byte for byte with the committed one
#   make bench-train   training tokens per second of dsv2 train on the demo config, beside the
#                      PyTorch reference trainer (tools/bench_train.py, one thread, float32) when
#                      torch is installed

DEMO_DIR     := $(BUILD)/train-demo
DEMO_CONFIG  := models/train-demo/config.json
DEMO_STEPS   ?= 1200
DEMO_OPTIONS := --steps $(DEMO_STEPS) --batch 8 --seq 64 --lr 3e-3 --warmup 50 --eval-every 100 --seed 1611
BENCH_STEPS  ?= 20

.PHONY: train-demo bench-train

# The King James Bible, one verse a line with the "Ge1:1 " references cut off, decoded by the
# bible program of Debian's bible-kjv package (which pulls in the text, bible-kjv-text; make deps).
# Without it, one line says so and the book's own text stands in.
$(DEMO_DIR)/data.txt: book.md $(wildcard chapters/*.md)
	@mkdir -p $(DEMO_DIR)
	@if command -v bible > /dev/null; then \
	  bible -f gen1:1-rev22:21 | sed -E 's/^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ //' > $@.tmp && mv $@.tmp $@; \
	else \
	  echo "make train-demo: no bible program (apt-get install bible-kjv), so training on book.md + chapters/ instead of the KJV"; \
	  cat book.md $(sort $(wildcard chapters/*.md)) > $@; \
	fi

train-demo: $(BUILD)/dsv2 $(DEMO_DIR)/data.txt
	@start=$$(date +%s); \
	./$(BUILD)/dsv2 train -c $(DEMO_CONFIG) --data $(DEMO_DIR)/data.txt -o $(DEMO_DIR)/model $(DEMO_OPTIONS) || exit 1; \
	echo "make train-demo: trained in $$(( $$(date +%s) - start )) s on: $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
	./$(BUILD)/dsv2 generate -m $(DEMO_DIR)/model -p "And the LORD said unto Moses" -n 60
	@sed -n -E 's/^\{"step":([0-9]+),"loss":([^,]+),"ce":([^,]+),.*/\1 \3/p' $(DEMO_DIR)/model/train_log.jsonl > $(DEMO_DIR)/train.dat
	@sed -n -E 's/^\{"step":([0-9]+),.*"eval_loss":([^,]+),.*/\1 \2/p' $(DEMO_DIR)/model/train_log.jsonl > $(DEMO_DIR)/eval.dat
	@command -v $(GNUPLOT) > /dev/null || { echo "make train-demo: no gnuplot, so no loss curve (make deps)"; exit 0; }; \
	$(GNUPLOT) -e "set terminal pngcairo size 800,480; set output '$(DEMO_DIR)/loss.png'; \
	  set xlabel 'step'; set ylabel 'cross-entropy (nats per token)'; set grid; \
	  set title 'dsv2 train on models/train-demo (batch 8 x 64 tokens)'; \
	  plot '$(DEMO_DIR)/train.dat' with lines lw 1 title 'training batch', \
	       '$(DEMO_DIR)/eval.dat' with linespoints lw 2 pt 7 title 'held-out windows'" && \
	echo "make train-demo: loss curve in $(DEMO_DIR)/loss.png"

# Two timings of the same steps: wall clock (what a user waits; on a shared machine it also counts
# time spent waiting for a core) and CPU time (this process's own work). The C trainer's CPU time
# is that of a (2 + BENCH_STEPS)-step run minus that of a 2-step run (a: the shell's children after
# the first run, b: after both, so (b − a) − a), from the shell's `times`, so start-up and
# tokenizing the text cancel (`times` runs in the recipe's own shell, as a subshell would not
# see the runs); PyTorch's is time.process_time() around its steps.
BENCH_OPTIONS = --batch 8 --seq 64 --warmup 5 --seed 1
bench-train: $(BUILD)/dsv2 $(DEMO_DIR)/data.txt
	@echo "CPU: $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
	@cpu() { times > $(DEMO_DIR)/bench.times; awk 'NR == 2 { split($$1, u, "m"); split($$2, s, "m"); \
	  printf "%.3f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' $(DEMO_DIR)/bench.times; }; \
	./$(BUILD)/dsv2 train -c $(DEMO_CONFIG) --data $(DEMO_DIR)/data.txt -o $(DEMO_DIR)/bench-short --steps 2 \
	    $(BENCH_OPTIONS) 2> $(DEMO_DIR)/bench-short.log || { cat $(DEMO_DIR)/bench-short.log; exit 1; }; \
	cpu > $(DEMO_DIR)/bench.c0; \
	./$(BUILD)/dsv2 train -c $(DEMO_CONFIG) --data $(DEMO_DIR)/data.txt -o $(DEMO_DIR)/bench --steps $$(($(BENCH_STEPS) + 2)) \
	    $(BENCH_OPTIONS) 2> $(DEMO_DIR)/bench.log || { cat $(DEMO_DIR)/bench.log; exit 1; }; \
	cpu > $(DEMO_DIR)/bench.c1; \
	c=$$(tail -2 $(DEMO_DIR)/bench.log | sed -n -E 's/.* ([0-9]+) tok\/s.*/\1/p'); \
	cc=$$(awk -v a=$$(cat $(DEMO_DIR)/bench.c0) -v b=$$(cat $(DEMO_DIR)/bench.c1) 'BEGIN { printf "%.0f", $(BENCH_STEPS) * 8 * 64 / ((b - a) - a) }'); \
	echo "C (dsv2 train, one core):        $$c training tokens/s wall clock, $$cc per CPU second"; \
	if python3 -c "import torch" 2> /dev/null; then \
	  set -- $$(python3 tools/bench_train.py $(DEMO_DIR)/bench $(BENCH_STEPS)) || exit 1; \
	  echo "PyTorch (one thread, float32):   $$1 training tokens/s wall clock, $$2 per CPU second"; \
	  awk -v c=$$c -v p=$$1 -v cc=$$cc -v pc=$$2 \
	    'BEGIN { printf "ratio C / PyTorch:               %.2f wall clock, %.2f CPU time\n", c / p, cc / pc }'; \
	else echo "PyTorch: not installed (pip install torch), so no side-by-side run"; fi

# make train-ablation: the balance losses off, at the paper's weights, and ten times those, each
# a short dsv2 train run of the demo config from the same seed; prints per run the held-out loss
# at the end and how unevenly the routed experts were loaded over the last 50 steps (the busiest
# expert's pairs over the mean, per MoE layer, averaged: 1.00 is perfectly even).
ABLATION_STEPS ?= 300
ABLATION_ALPHAS ?= 0,0,0 0.003,0.05,0.02 0.03,0.5,0.2

.PHONY: train-ablation
train-ablation: $(BUILD)/dsv2 $(DEMO_DIR)/data.txt
	@printf '%-18s %10s %10s %14s\n' alpha1,2,3 held-out balance 'max/mean load'
	@for a in $(ABLATION_ALPHAS); do \
	  d=$(DEMO_DIR)/ablation-$$a; \
	  ./$(BUILD)/dsv2 train -c $(DEMO_CONFIG) --data $(DEMO_DIR)/data.txt -o $$d --steps $(ABLATION_STEPS) \
	      --batch 8 --seq 64 --lr 3e-3 --warmup 50 --eval-every $(ABLATION_STEPS) --seed 1611 --alpha $$a \
	      2> $$d.log || { cat $$d.log; exit 1; }; \
	  tail -n 50 $$d/train_log.jsonl | sed -n -E 's/.*"load":\{(.*)\}\}$$/\1/p' | \
	    awk -v RS='\\]' -F'[][,:"]+' 'NF > 2 { max = 0; sum = 0; n = 0; \
	      for (i = 3; i <= NF; i++) if ($$i != "") { n++; sum += $$i; if ($$i > max) max = $$i }; \
	      r += max / (sum / n); k++ } END { printf "%.2f\n", r / k }' > $$d.ratio; \
	  tail -n 1 $$d/train_log.jsonl | sed -E 's/.*"exp_bal":([^,]+),"dev_bal":([^,]+),"comm_bal":([^,]+),.*"eval_loss":([^,]+),.*/\4 \1 \2 \3/' | \
	    awk -v a=$$a -v r=$$(cat $$d.ratio) '{ printf "%-18s %10.4f %10.4f %14s\n", a, $$1, $$2 + $$3 + $$4, r }'; \
	done

# make train-ablation-attention: the twelve runs of table (a) into build/train-ablations/, each
# log then compared with its committed copy in models/train-ablations/ (the same bytes on a
# machine that builds the same code: the trainer's arithmetic has a fixed order).
ATTENTION_RUNS := all attention-mha attention-gqa attention-mqa \
                  attention-mla-s2 attention-mha-s2 attention-gqa-s2 attention-mqa-s2 \
                  attention-mla-s3 attention-mha-s3 attention-gqa-s3 attention-mqa-s3

.PHONY: train-ablation-attention
train-ablation-attention: $(BUILD)/dsv2
	@mkdir -p $(BUILD)/train-ablations
	@sh tools/train_ablations.sh ./$(BUILD)/dsv2 $(BUILD)/train-ablations $(ATTENTION_RUNS)
	@for r in $(ATTENTION_RUNS); do \
	  held=$$(tail -n 1 $(BUILD)/train-ablations/$$r/train_log.jsonl | sed -E 's/.*"eval_loss":([^,]+),.*/\1/'); \
	  if cmp -s $(BUILD)/train-ablations/$$r/train_log.jsonl models/train-ablations/$$r/train_log.jsonl; \
	  then same="the committed log, byte for byte"; else same="DIFFERS from models/train-ablations/$$r"; fi; \
	  printf '%-18s held-out %s  %s\n' $$r "$$held" "$$same"; \
	done
