# baton — see README.md. `make help` lists the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/baton
PKGS  := ./...
# Unit and in-process tests run with the race detector; e2e runs the built
# binary as separate processes.
UNIT_PKGS := ./protocol/... ./coordinator/... ./agent/... ./lbnode/... ./internal/... ./cmd/...

.PHONY: help build dev demo test test-unit test-e2e check bench fuzz clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/baton
	$(GO) build -o $(BIN) ./cmd/baton

dev: build ## run `baton dev` with the seed's agents (Ctrl-C stops it)
	$(BIN) dev --agent cpus=2 --agent cpus=2 --agent cpus=4 --agent cpus=4,accelerators=A100:1

demo: build ## the main job: a local cluster, up/status/update under load, figures
	$(GO) run ./examples/demo --baton $(BIN)

test: ## everything CI runs: unit, in-process and end-to-end tests, and check
	$(MAKE) check
	$(GO) test -race -count=1 -timeout 10m $(UNIT_PKGS)
	$(GO) test -count=1 -timeout 15m ./e2e/...

test-unit: ## unit and in-process tests only
	$(GO) test -race -count=1 $(UNIT_PKGS)

test-e2e: ## end-to-end tests only (separate processes)
	$(GO) test -count=1 -v -timeout 15m ./e2e/...

check: ## gofmt, vet, staticcheck (pinned in go.mod), builds for macOS and without cgo, go mod tidy leaves no diff, import boundaries
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)
	@# The CLI runs on laptops too: the binary must build for macOS and without cgo.
	GOOS=darwin CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/baton
	CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/baton
	@cp go.mod /tmp/baton-go.mod.bak && cp go.sum /tmp/baton-go.sum.bak; \
	  $(GO) mod tidy; \
	  if ! git diff --quiet -- go.mod go.sum; then echo "go mod tidy changes go.mod/go.sum"; git diff -- go.mod go.sum | head -20; \
	    cp /tmp/baton-go.mod.bak go.mod; cp /tmp/baton-go.sum.bak go.sum; exit 1; fi
	./scripts/check-imports.sh

bench: build ## benchmarks: the LB proxy against a direct connection; the controller's passes; the coordinator at fleet scale (baton sim); durability; a coordinator cluster's failover, writes and agent failure detection; code distribution (bundlebench)
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./lbnode/
	$(GO) test -run '^$$' -bench . -benchmem ./coordinator/
	$(BIN) sim --agents 100,300,1000 --pass-agents 2000
	@# Durability: a three-node cluster applies 100,000 commands, stops and starts.
	BATON_DURABILITY_COMMANDS=100000 $(GO) test -count=1 -run '^TestRestartAfterManyCommands$$' -v ./coordinator/ 2>&1 | grep -E 'durability_test|^(ok|FAIL|---)'
	@# A coordinator cluster as separate processes: failover, API writes, agent failure detection.
	$(GO) run ./internal/clusterbench --baton $(BIN)
	@# Code distribution: a 100 MB bundle uploaded to 3 coordinators and fanned out to 3 agents.
	$(GO) run ./internal/bundlebench --baton $(BIN)

# Every decoder of outside input: the task parser, each NATS message (as
# the coordinator, agents and LBs receive them), FSM Apply for every
# command type, and the API bodies.
FUZZ_TARGETS := protocol:FuzzParseTask protocol:FuzzDecodeMessages \
	coordinator:FuzzFSMApply coordinator:FuzzControllerMessages coordinator:FuzzAPIBodies \
	agent:FuzzDesiredSet agent:FuzzShimEvents lbnode:FuzzDecodeTable lbnode:FuzzSyncReply \
	internal/bundle:FuzzUnpack
FUZZTIME ?= 10m

fuzz: ## run every fuzz target for FUZZTIME each (default 10m; e.g. make fuzz FUZZTIME=30s)
	@set -o pipefail; for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "== $$name (./$$pkg, $(FUZZTIME))"; start=$$(date +%s); \
	  $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) ./$$pkg/ 2>&1 | \
	    awk '/^fuzz: elapsed/ { last = $$0; next } { print } END { if (last) print last }' || exit 1; \
	  echo "== $$name ran $$(( $$(date +%s) - start ))s"; done

clean: ## remove build output
	rm -rf bin
