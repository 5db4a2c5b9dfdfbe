//! `crds/` is generated from the Rust types; this fails when it is stale.

#[test]
fn committed_crds_match_the_rust_types() {
    let generated = greenlight::crdgen::render().expect("render CRDs");
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/greenlight.yaml"))
            .expect("read crds/greenlight.yaml");
    assert!(
        generated == committed,
        "crds/greenlight.yaml is stale: run `make crds` and commit it"
    );
}

#[test]
fn crds_use_no_cel_rules_so_kubernetes_1_20_accepts_them() {
    let generated = greenlight::crdgen::render().expect("render CRDs");
    assert!(!generated.contains("x-kubernetes-validations"));
}
