//! Faults leave nothing stuck (issue #15): what a crash, a cut connection or a lost answer left
//! behind heals by itself, and a retry of what may or may not have happened is safe.

use chrono::{TimeDelta, Utc};

use crate::helpers::{TestApp, TestContext};
use crate::tests;

tests![a_webhook_held_by_a_finished_delivery_still_goes_out,];

/// Queues `statuses` for `intent` in the sandbox's queue, due now, each held by the one before.
async fn queue(app: &TestApp, intent: &str, statuses: &[&str]) {
    let mut tx = app.store.begin().await.expect("tx");
    for (i, status) in statuses.iter().enumerate() {
        let at = Utc::now() - TimeDelta::seconds(10) + TimeDelta::milliseconds(i as i64);
        tx.sandbox_enqueue(intent, &format!(r#"{{"status":"{status}"}}"#), at, None)
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
}

/// An older build recorded a delivery and released the next one in two statements; a crash
/// between them left an intent's CAPTURED held by a delivered AUTHORIZED, and the payment
/// AUTHORIZED until reconciliation. Such rows are due again.
async fn a_webhook_held_by_a_finished_delivery_still_goes_out(ctx: TestContext) {
    // The queue is driven by hand: no sandbox worker may deliver behind the test's back.
    let app = ctx
        .spawn_app_with(|s| s.payments.sandbox = Some(false))
        .await;
    queue(&app, "pi_delivered", &["AUTHORIZED", "CAPTURED"]).await;
    queue(&app, "pi_given_up", &["AUTHORIZED", "CAPTURED"]).await;
    queue(&app, "pi_pending", &["AUTHORIZED", "CAPTURED"]).await;
    // What the crash left: the holders finished, the holds still in place.
    let finished = ctx
        .execute_sql(
            "UPDATE sandbox_deliveries SET attempts = 1, last_status = 200, \
             delivered_at = next_attempt_at \
             WHERE payment_intent_id = 'pi_delivered' AND body LIKE '%AUTHORIZED%'",
        )
        .await;
    assert_eq!(finished, 1);
    let finished = ctx
        .execute_sql(
            "UPDATE sandbox_deliveries SET attempts = 8, given_up_at = next_attempt_at \
             WHERE payment_intent_id = 'pi_given_up' AND body LIKE '%AUTHORIZED%'",
        )
        .await;
    assert_eq!(finished, 1);
    let due = app
        .store
        .sandbox_due_deliveries(Utc::now(), 50)
        .await
        .expect("due");
    let mut due: Vec<(&str, &str)> = due
        .iter()
        .map(|d| (d.payment_intent_id.as_str(), d.body.as_str()))
        .collect();
    due.sort_unstable();
    assert_eq!(
        due,
        [
            ("pi_delivered", r#"{"status":"CAPTURED"}"#),
            ("pi_given_up", r#"{"status":"CAPTURED"}"#),
            ("pi_pending", r#"{"status":"AUTHORIZED"}"#),
        ],
        "a capture whose authorization is finished goes out; one still waiting on a pending \
         authorization does not"
    );
}
