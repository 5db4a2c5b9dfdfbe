//! A real Prometheus (Debian's `prometheus`) on loopback, scraping targets every second.

use std::process::Command;
use std::time::{Duration, Instant};

use super::process::Proc;
use super::{find_binary, free_port, temp_dir};

pub struct Prometheus {
    pub url: String,
    proc: Option<Proc>,
    dir: std::path::PathBuf,
    port: u16,
}

impl Prometheus {
    pub fn start(targets: &[String]) -> Prometheus {
        let dir = temp_dir("greenlight-prom");
        let port = free_port();
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n- job_name: e2e\n  scrape_interval: 1s\n  static_configs:\n  - targets: [{list}]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus config");
        let mut prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            proc: None,
            dir,
            port,
        };
        prometheus.restart();
        prometheus
    }

    /// Starts it (again) on the same address with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new(find_binary("prometheus"));
        cmd.args([
            &format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ),
            &format!("--storage.tsdb.path={}", self.dir.join("data").display()),
            &format!("--web.listen-address=127.0.0.1:{}", self.port),
            "--log.level=warn",
        ]);
        self.proc = Some(Proc::spawn("prometheus", cmd, &self.dir));
    }

    /// Waits until an instant query returns `series` series.
    pub async fn wait_for_series(&mut self, query: &str, series: usize) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let n = async {
                let v: serde_json::Value = http
                    .get(format!("{}/api/v1/query", self.url))
                    .query(&[("query", query)])
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                v["data"]["result"].as_array().map(|a| a.len())
            }
            .await;
            if n == Some(series) {
                return;
            }
            if let Some(p) = self.proc.as_mut()
                && !p.is_running()
            {
                panic!("prometheus exited:\n{}", p.tail(30));
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "prometheus has no {series} series for {query} (has {n:?})"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
