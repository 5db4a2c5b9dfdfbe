//! The fake kubelet's reading of a Job pod's environment and output, as a kubelet would:
//! the unit tests of `e2e/support/jobpods.rs`, which the e2e harness does not run.

#[path = "../e2e/support/jobpods.rs"]
#[allow(dead_code)]
mod jobpods;

use jobpods::{MESSAGE_BYTES, log_tail, service_addresses};

#[test]
fn service_addresses_are_found_with_their_port_and_only_whole() {
    let found = service_addresses("curl http://web-primary.shop.svc:8080/health && x.y.svcx");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].text, "web-primary.shop.svc:8080");
    assert_eq!(
        (found[0].service.as_str(), found[0].namespace.as_str()),
        ("web-primary", "shop")
    );
    let long = service_addresses("postgresql://u@db.shop.svc.cluster.local:5432/shop");
    assert_eq!(long[0].text, "db.shop.svc.cluster.local:5432");
}

#[test]
fn a_url_whose_host_is_a_bare_service_name_is_that_service_in_the_pods_namespace() {
    let found = service_addresses("postgresql://postgres@shop-db:5432/shop");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].text, "shop-db:5432");
    assert_eq!(
        (found[0].service.as_str(), found[0].namespace.as_str()),
        ("shop-db", "")
    );
    for not_a_service in [
        "http://127.0.0.1:8080/x",
        "http://localhost:80",
        "http://web.example.com/",
        "a plain word: shop-db",
    ] {
        assert!(
            service_addresses(not_a_service).is_empty(),
            "{not_a_service}"
        );
    }
}

#[test]
fn the_message_is_the_last_lines_of_output_within_the_kubelets_bytes() {
    let output: String = (0..200).map(|i| format!("line {i}\n")).collect();
    let tail = log_tail(&output);
    assert!(tail.ends_with("line 199"));
    assert!(!tail.contains("line 119\n"));
    assert!(log_tail(&"é".repeat(5000)).len() <= MESSAGE_BYTES);
}
