# The two commands of the README: `make run` and `make test`.
.PHONY: run test deps lint unit e2e crds bench

run:
	bash hack/run.sh

test: deps lint
	cargo test --all-targets

deps:
	bash hack/install-deps.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

unit:
	cargo test --lib --test crds

e2e: deps
	cargo test --test e2e

# Prints the canary figures the README quotes (reaction time, API writes per step, CPU, memory).
bench: deps
	cargo bench --bench canary

crds:
	cargo run -q --bin greenlight -- crdgen > crds/greenlight.yaml
