//! A flood of requests for functions that do not exist neither slows real
//! traffic down nor hides a function deployed later under one of the names.

use crate::server::Server;
use reqwest::StatusCode;
use std::time::{Duration, Instant};

const THREADS: usize = 8;
const PER_THREAD: usize = 400;

#[test]
fn a_flood_of_unknown_names_does_not_hold_up_real_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.deploy_function(
        "real",
        "export default { fetch: () => new Response('real') }",
    );

    let started = Instant::now();
    let flood: Vec<_> = (0..THREADS)
        .map(|t| {
            let (url, http) = (server.url.clone(), server.http());
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    // Valid names never seen before, and names no function can have.
                    let name = if i % 4 == 3 {
                        format!("Not_A_Name.{t}.{i}")
                    } else {
                        format!("ghost-{t}-{i}")
                    };
                    let response = http.get(format!("{url}/fn/{name}/")).send().unwrap();
                    assert_eq!(response.status(), StatusCode::NOT_FOUND, "{name}");
                }
            })
        })
        .collect();
    let http = server.http();
    let mut slowest = Duration::ZERO;
    while !flood.iter().all(|t| t.is_finished()) {
        let asked = Instant::now();
        let response = http.get(format!("{}/fn/real/", server.url)).send().unwrap();
        assert_eq!(response.text().unwrap(), "real");
        slowest = slowest.max(asked.elapsed());
    }
    for thread in flood {
        thread.join().unwrap();
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "the flood took {took:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "a real request took {slowest:?}"
    );

    // A name that was looked up (and found absent) is served once deployed.
    server.deploy_function(
        "ghost-0-0",
        "export default { fetch: () => new Response('here now') }",
    );
    let response = http
        .get(format!("{}/fn/ghost-0-0/", server.url))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().unwrap(), "here now");
}
