//! The busiest day (issue #14): a burst larger than the database pool waits its turn instead of
//! failing, and what cannot wait is told so in a way a client can act on.

use futures::future::join_all;

use crate::helpers::TestContext;
use crate::tests;

tests![a_burst_larger_than_the_pool_queues_or_is_told_to_retry,];

async fn a_burst_larger_than_the_pool_queues_or_is_told_to_retry(ctx: TestContext) {
    let app = ctx
        .spawn_app_with(|s| {
            s.database.max_connections = 4;
            s.admission.max_queued = 100;
        })
        .await;
    let campaign = app.create_campaign("Viral", 1_000_000.0).await;
    let donors: Vec<String> = (0..300).map(|i| format!("donor{i}@example.org")).collect();
    let replies = join_all(donors.iter().map(|donor| app.donate(&campaign, donor, "5"))).await;
    let mut created = 0;
    let mut overloaded = 0;
    for reply in &replies {
        match (reply.status, reply.code()) {
            (201, _) => created += 1,
            (503, "overloaded") => {
                let retry: u64 = reply
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .expect("an overloaded answer says when to retry");
                assert!(retry > 0);
                overloaded += 1;
            }
            (status, code) => panic!(
                "a healthy database behind a busy server answered {status} {code}: {:?}",
                reply.json
            ),
        }
    }
    eprintln!("300 at once with a pool of 4: {created} created, {overloaded} told to retry");
    let stats = app
        .send_as_operator(reqwest::Method::GET, "/api/v1/admin/stats", None)
        .await;
    assert_eq!(
        stats.json["donations_total"], created,
        "every 201 is a donation, and no refused request left one behind: {:?}",
        stats.json
    );
}
