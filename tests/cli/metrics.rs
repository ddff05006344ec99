//! `/metrics` names every function: it takes the admin token, or a metrics
//! token that opens nothing else.

use crate::server::{Server, TOKEN};
use reqwest::StatusCode;

const METRICS_TOKEN: &str = "scraper-token-42";

#[test]
fn metrics_need_the_admin_or_the_metrics_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--metrics-token", METRICS_TOKEN]);
    server.create_function("secret-name");
    let http = server.http();
    let metrics = format!("{}/metrics", server.url);

    let anonymous = http.get(&metrics).send().unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(!anonymous.text().unwrap().contains("isola_"));
    let wrong = http.get(&metrics).bearer_auth("nope").send().unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    for token in [TOKEN, METRICS_TOKEN] {
        let response = http.get(&metrics).bearer_auth(token).send().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "with {token}");
        let text = response.text().unwrap();
        assert!(text.contains("isola_warm_isolates"), "{text}");
        assert!(text.contains("isola_records_dropped_total 0"), "{text}");
    }

    // The metrics token opens /metrics only.
    let api = http
        .get(format!("{}/v1/functions", server.url))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn metrics_without_a_metrics_token_take_the_admin_token_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let http = server.http();
    let metrics = format!("{}/metrics", server.url);
    assert_eq!(
        http.get(&metrics).send().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.get(&metrics)
            .bearer_auth(METRICS_TOKEN)
            .send()
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.get(&metrics)
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
}
