# Developer targets. `make test` is the README's test command.
CARGO ?= cargo

.PHONY: build dev run test test-unit test-integration lint fmt bench fuzz loadtest clean migrate

build:          ## release build of the node
	$(CARGO) build --release

run:            ## run a node on its embedded defaults (SQLite under ./data, in-process bus), dev mode
	$(CARGO) run --release -- --dev

dev:            ## run a debug node in dev mode with debug logs
	RUST_LOG=debug,sqlx=warn,hyper=info $(CARGO) run -- --dev

test:           ## every test
	$(CARGO) test --workspace

test-unit:      ## unit tests (library code, paused-time engine tests)
	$(CARGO) test --workspace --lib
	$(CARGO) test -p engine --test broadcast

test-integration: ## end-to-end tests against real nodes on port 0
	$(CARGO) test -p services --tests
	$(CARGO) test -p api --tests

lint:           ## formatting and clippy, as CI runs them
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

migrate:        ## apply database migrations and exit
	$(CARGO) run --release -- migrate

bench:          ## criterion benchmarks of the engine's hot paths (see BENCHMARKS.md)
	$(CARGO) bench -p benches

fuzz:           ## every fuzz target for 60 s, optimised (`make test` gives each 3 s; see docs/fuzzing.md)
	OVASABI_FUZZ_SECS=60 $(CARGO) test -p ovasabi-fuzz --release --test fuzz -- --nocapture

loadtest:       ## build the load-testing harness (target/release/ovasabi-loadtest)
	$(CARGO) build --release -p loadtest

clean:
	$(CARGO) clean
	rm -rf data
