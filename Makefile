# The two commands of the README: `make run` and `make test`.
.PHONY: run demo test deps lint unit e2e crds docs manifests image bench bench-scale oracle

run:
	bash hack/run.sh

# A promotion and a rollback on a local control plane, shown live; stops everything at the end.
demo: deps
	cargo build -q --bins
	target/debug/greenlight-demo

# The binaries `make run` builds are built first, so the first-five-minutes case measures the
# start-up and not a compilation racing the rest of the suite for the cores.
test: deps lint image
	cargo build --workspace --bins
	mdbook build docs
	cargo test --workspace --all-targets

deps:
	bash hack/install-deps.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	# A workspace build unifies features across crates; the plugin and the core must also build
	# alone, as `cargo install --path crates/kubectl-greenlight` builds the plugin.
	cargo check -p kubectl-greenlight -p greenlight-core --all-targets

unit:
	cargo test --workspace --lib --test crds --test purity

# The e2e cases run the operator's and the plugin's binaries, which are other crates' binaries.
e2e: deps
	cargo build --workspace --bins
	cargo test --test e2e

# Prints the canary figures the book quotes (reaction time, API writes per step, CPU, memory;
# docs/src/operations/figures.md),
# then how fast each response is that the e2e suite bounds only loosely (benches/responses.rs).
bench: deps
	cargo build --release --workspace --bins
	cargo bench --bench canary
	cargo bench --bench responses

# Prints the scale figures the book quotes (docs/src/operations/scale.md): 250 pipelines x 4
# stages and 10,000 releases on the real control plane (GREENLIGHT_SCALE=medium|smoke|soak for
# other sizes).
bench-scale: deps
	cargo build --release --workspace --bins
	cargo bench --bench scale

# The comparison judge's oracle: seeded cases and what SciPy says of each, written to
# crates/greenlight-core/src/judge/oracle.json, which the tests read (they never run Python).
oracle:
	python3 -m venv target/oracle-venv
	target/oracle-venv/bin/pip install -q scipy==1.17.1
	target/oracle-venv/bin/python hack/oracle/mwu.py

# The book (docs/, built into target/book): the CRD reference written again from crds/, then
# built. tests/book.rs fails in `make test` when the reference is stale.
docs: deps
	cargo build --workspace --bins
	GREENLIGHT_BLESS=1 cargo test --test book
	mdbook build docs

crds:
	cargo run -q --bin greenlight -- crdgen > crds/greenlight.yaml.new
	mv crds/greenlight.yaml.new crds/greenlight.yaml

# The kustomize base: the Helm chart rendered with config/default/chart-values.yaml.
manifests: deps
	python3 hack/helm.py render charts/greenlight --plain -f config/default/chart-values.yaml \
	  > config/default/greenlight.yaml.new 2>/dev/null
	mv config/default/greenlight.yaml.new config/default/greenlight.yaml

# The operator's OCI image (target/image/oci), built without a daemon or a registry.
image: deps
	bash hack/image.sh
