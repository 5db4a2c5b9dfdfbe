//! Serving certificates for the admission webhook, made with openssl as cert-manager would
//! make them: a CA and a leaf for 127.0.0.1, written as `ca.crt`, `tls.crt` and `tls.key`.

use std::path::Path;
use std::process::Command;

/// Writes a fresh CA and a leaf for 127.0.0.1 it signs into `dir`; returns the CA's PEM.
pub fn webhook_certs(dir: &Path, name: &str) -> String {
    webhook_certs_for(dir, name, "IP:127.0.0.1")
}

/// Writes a fresh CA and a leaf with these subject alternative names (openssl syntax, e.g.
/// `DNS:svc.ns.svc`) into `dir`; returns the CA's PEM.
pub fn webhook_certs_for(dir: &Path, name: &str, san: &str) -> String {
    std::fs::create_dir_all(dir).expect("cert dir");
    let work = super::temp_dir("greenlight-certs");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&work)
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_subject = format!("/CN={name} webhook CA");
    let mut ca = vec![
        "req", "-x509", "-days", "30", "-keyout", "ca.key", "-out", "ca.crt",
    ];
    ca.extend(ec);
    ca.extend(["-subj", &ca_subject]);
    run(&ca);
    let mut csr = vec![
        "req",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        "/CN=127.0.0.1",
    ];
    csr.extend(ec);
    run(&csr);
    std::fs::write(work.join("san.cnf"), format!("subjectAltName={san}\n")).expect("san");
    run(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        "san.cnf",
        "-out",
        "tls.crt",
    ]);
    // Written key first, certificate last, as a Secret update lands all at once anyway.
    for file in ["ca.crt", "tls.key", "tls.crt"] {
        std::fs::copy(work.join(file), dir.join(file)).expect("copy cert");
    }
    let _ = std::fs::remove_dir_all(&work);
    std::fs::read_to_string(dir.join("ca.crt")).expect("read ca")
}
