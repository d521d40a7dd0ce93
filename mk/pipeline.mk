# Kafka pipeline (pipeline/, bertstream broker/serve/demo): the demo, and
# the checks CI adds after `make test`: the pipeline's tests under the race
# detector, with kcat installed so that the outside-client test runs
# instead of skipping.
#
#   make demo                         # broker + serve + client, demo/model
#   make demo DEMO_MODEL=testdata/bert-tiny/bert-classifier
#   make pipeline-race                # what CI runs
#   make pipeline-bench               # pipeline vs bare engine, once
#   make throughput                   # the same with serve and broker processes too
#   make rebalance-gap                # a third worker joins two: eager vs cooperative
#   make scale-out                    # two serve --threads 1 vs one --threads 2

DEMO_MODEL ?= demo/model

.PHONY: kcat pipeline-race pipeline-bench throughput rebalance-gap scale-out

demo:
	$(GO) run ./cmd/bertstream demo --model $(DEMO_MODEL)

# Idempotent: nothing to do when kcat is on the PATH.
kcat:
	@command -v kcat >/dev/null 2>&1 || { \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y kcat || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y kcat; }; }

# The race detector needs cgo, which the Makefile turns off by default.
pipeline-race: kcat
	CGO_ENABLED=1 $(GO) test -race -count=1 ./pipeline/...
	CGO_ENABLED=1 $(GO) test -race -count=1 -run 'Kcat|Demo|EnvFlags|HelpEveryCommand' ./cmd/bertstream/

pipeline-bench:
	$(GO) test -run '^$$' -bench Pipeline -benchtime 1x ./pipeline/

# The engine against one worker, with the broker in its process and as
# `bertstream serve` and `bertstream broker` processes, over rounds;
# BERTSTREAM_THROUGHPUT_MODEL, _ROUNDS, _LANES and _THREADS set the model
# (default demo/model), the rounds (5), the batches run at once (1) and
# the model's threads in each (2 / lanes).
throughput:
	$(GO) test -run '^$$' -bench 'Throughput$$' -benchtime 1x -timeout 60m ./cmd/bertstream/

# Real broker and serve processes; BERTSTREAM_GAP_MODEL and
# BERTSTREAM_GAP_RATE pick the model and the requests per second.
GAP_COUNT ?= 3
rebalance-gap:
	$(GO) test -run '^$$' -bench RebalanceGap -benchtime 1x -count $(GAP_COUNT) ./cmd/bertstream/

# Real broker and serve processes, demo/model (BERTSTREAM_SCALE_MODEL).
scale-out:
	$(GO) test -run '^$$' -bench ScaleOut -benchtime 1x -count 3 ./cmd/bertstream/

CI_EXTRA += pipeline-race
