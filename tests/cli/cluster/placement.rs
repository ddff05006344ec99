//! A cluster's shared state and placement: function KV on every worker,
//! a GET run again when its worker dies, the assigner's slices over three
//! and five worker processes.

use super::*;

/// Creates `name` and deploys `code` as its one module, with its KV
/// bound as `env.KV`.
fn deploy_with_kv(gateway: &Server, name: &str, code: &str) {
    gateway.create_function(name);
    let deployed = gateway
        .api(
            reqwest::Method::POST,
            &format!("/v1/functions/{name}/deployments"),
        )
        .json(&serde_json::json!({
            "files": [{ "path": "main.js", "code": code }],
            "entry": "main.js",
            "kv_binding": "KV",
        }))
        .send()
        .unwrap();
    assert_eq!(deployed.status(), reqwest::StatusCode::CREATED);
}

#[test]
fn functions_share_their_kv_across_the_nodes_of_a_cluster() {
    let (cluster, gateway, first) = Cluster::start("hello", "export default () => 'hi'");
    let code = "export default { async fetch(r, env) { for (;;) { const { value, version } = await env.KV.getWithVersion('hits'); const n = Number(value ?? 0) + 1; const r = await env.KV.atomic().check('hits', version).set('hits', String(n)).commit(); if (r.ok) return new Response(String(n)); } } }";
    deploy_with_kv(&gateway, "counter", code);
    let hit = || {
        let response = gateway
            .http()
            .get(format!("{}/fn/counter/", gateway.url))
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    eventually(Duration::from_secs(10), "no worker took it", || {
        hit() == (200, "1".to_string())
    });
    for n in 2..=5 {
        assert_eq!(hit(), (200, n.to_string()));
    }
    // The gateway's API reads what the worker wrote, and writes what the
    // workers then read.
    let read = gateway.cli(&["kv", "get", "counter", "hits"], "");
    assert_eq!(crate::stdout(&read), "5");
    let put = gateway.cli(&["kv", "put", "counter", "hits", "41"], "");
    assert!(put.status.success(), "{}", crate::stderr(&put));
    assert_eq!(hit(), (200, "42".to_string()));
    // A new worker, with an empty data directory, carries on where the
    // dead one stopped.
    drop(first);
    let _second = Worker::start(&cluster.nats, &cluster.key);
    eventually(
        Duration::from_secs(10),
        "the new worker did not count on",
        || hit() == (200, "43".to_string()),
    );
    assert_eq!(hit(), (200, "44".to_string()));
}

#[test]
fn a_get_whose_worker_dies_runs_again_elsewhere_and_a_post_gets_502() {
    let (cluster, gateway, mut first) = Cluster::start("hello", "export default () => 'hi'");
    // The first run of each request marks it in KV and hangs; a second
    // run answers at once.
    let code = "export default { async fetch(r, env) { const key = r.method; if (await env.KV.get(key)) return new Response('again'); await env.KV.put(key, '1'); await new Promise((r) => setTimeout(r, 20000)); return new Response('first') } }";
    deploy_with_kv(&gateway, "once", code);
    // The gateway places invocations once it has heard the worker.
    std::thread::sleep(Duration::from_millis(1500));
    let send = |method: reqwest::Method| {
        let url = format!("{}/fn/once/", gateway.url);
        let request = gateway.http().request(method, url).body("x");
        std::thread::spawn(move || {
            let started = Instant::now();
            let response = request.send().unwrap();
            let status = response.status().as_u16();
            (status, response.text().unwrap(), started.elapsed())
        })
    };
    let started = |method: &str| {
        let out = gateway.cli(&["kv", "get", "once", method], "");
        crate::stdout(&out) == "1"
    };
    let asked = send(reqwest::Method::GET);
    eventually(Duration::from_secs(10), "the GET did not start", || {
        started("GET")
    });
    // Another worker joins; the one running the GET dies: it runs again
    // there.
    let mut second = Worker::start(&cluster.nats, &cluster.key);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = first.child.kill();
    let _ = first.child.wait();
    let (status, body, took) = asked.join().unwrap();
    assert_eq!((status, body.as_str()), (200, "again"));
    assert!(took < Duration::from_secs(10), "{took:?}");

    // A POST is not repeated: 502, said plainly to the owner in its record.
    let asked = send(reqwest::Method::POST);
    eventually(Duration::from_secs(10), "the POST did not start", || {
        started("POST")
    });
    let _third = Worker::start(&cluster.nats, &cluster.key);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = second.child.kill();
    let _ = second.child.wait();
    let (status, body, took) = asked.join().unwrap();
    assert_eq!((status, body.as_str()), (502, "Bad Gateway"));
    assert!(took < Duration::from_secs(10), "{took:?}");
    let records = gateway.list_of("/v1/functions/once/invocations?limit=10", 2);
    let lost = records.iter().find(|r| r["error_code"] == "worker_lost");
    assert!(lost.is_some(), "{records:?}");
}

#[test]
fn three_workers_share_the_slices_and_a_function_stays_warm_on_one() {
    let (cluster, gateway, _first) = Cluster::start(
        "hello",
        "let n = 0; export default { fetch() { n += 1; return new Response(String(n)) } }",
    );
    let _more = [
        Worker::start(&cluster.nats, &cluster.key),
        Worker::start(&cluster.nats, &cluster.key),
    ];
    // The assigner gives each worker about a third of the 256 slices.
    eventually(Duration::from_secs(20), "the slices are not shared", || {
        let held = slices_held(&gateway);
        held.len() == 3 && held.iter().all(|n| (80..=90).contains(n))
    });
    let status = crate::stdout(&gateway.cli(&["status"], ""));
    assert!(status.contains(", assigner"), "{status}");
    // One function's invocations all go to its slice's worker, where one
    // isolate stays warm: it counts them all.
    for n in 1..=30 {
        assert_eq!(get(&gateway), (200, n.to_string()));
    }
}

/// The slices each worker holds, as `isola status` on `gateway` lists them.
fn slices_held(gateway: &Server) -> Vec<u32> {
    let status = crate::stdout(&gateway.cli(&["status"], ""));
    status
        .lines()
        .filter_map(|line| {
            line.split(", ")
                .nth(1)?
                .strip_suffix(" slices")?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn five_workers_lose_no_queued_invocation_when_one_dies_and_a_sixth_gets_its_share() {
    let (cluster, gateway, mut first) = Cluster::start(
        "queued",
        "export default async (p) => { await new Promise((r) => setTimeout(r, 200)); return { n: p.n } }",
    );
    let _more: Vec<Worker> = (0..4)
        .map(|_| Worker::start(&cluster.nats, &cluster.key))
        .collect();
    eventually(
        Duration::from_secs(20),
        "5 workers do not share the slices",
        || {
            let held = slices_held(&gateway);
            held.len() == 5 && held.iter().all(|n| (40..=62).contains(n))
        },
    );
    // Thirty queued invocations; a worker dies while they run.
    let ids: Vec<String> = (0..30)
        .map(|n| queue(&gateway, serde_json::json!({ "n": n })))
        .collect();
    let _ = first.child.kill();
    let _ = first.child.wait();
    // Every one acknowledged runs, once its worker's lease on it lapses
    // (30 s) if the dead one held it.
    for (n, id) in ids.iter().enumerate() {
        let mut state = serde_json::Value::Null;
        eventually(
            Duration::from_secs(60),
            &format!("{id} did not run"),
            || {
                state = queued_state(&gateway, id);
                state["state"] == "ok"
            },
        );
        assert_eq!(state["output"], serde_json::json!({ "n": n }), "{state}");
    }
    // A sixth worker joins: the assigner gives it its share.
    let _sixth = Worker::start(&cluster.nats, &cluster.key);
    eventually(
        Duration::from_secs(20),
        "the new worker got no share",
        || {
            let held = slices_held(&gateway);
            held.len() == 5 && held.iter().all(|n| *n >= 35)
        },
    );
}
