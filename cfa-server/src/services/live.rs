//! Live totals for viewers: one broadcast channel per watched campaign, fed by the totals
//! consumer.
//!
//! After the consumer commits a change to a campaign's totals it calls [`LiveTotals::changed`].
//! If anyone watches that campaign, the new totals are read **once** and sent to every viewer
//! through a `tokio::sync::broadcast` channel, so a thousand viewers cost one database read per
//! change, not a thousand. A campaign nobody watches costs nothing. A viewer that falls behind
//! skips to the newest totals (only the latest figures matter), and [`LiveTotals::close`] ends
//! every stream when the server shuts down, so open streams never hold up a graceful stop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use uuid::Uuid;

use super::totals::{TotalsCache, current};
use crate::storage::{CampaignTotals, Store};

/// How many updates a slow viewer may fall behind before it skips to the newest.
const BACKLOG: usize = 16;

/// The channels of the campaigns being watched in this process.
pub struct LiveTotals {
    channels: Mutex<HashMap<Uuid, broadcast::Sender<Arc<CampaignTotals>>>>,
    closed: AtomicBool,
    reads: AtomicU64,
}

impl Default for LiveTotals {
    fn default() -> Self {
        LiveTotals {
            channels: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            reads: AtomicU64::new(0),
        }
    }
}

impl LiveTotals {
    /// Starts watching a campaign: the receiver gets its totals after each change. `None` once
    /// the server is shutting down.
    pub fn subscribe(&self, campaign_id: Uuid) -> Option<broadcast::Receiver<Arc<CampaignTotals>>> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let sender = channels
            .entry(campaign_id)
            .or_insert_with(|| broadcast::channel(BACKLOG).0);
        Some(sender.subscribe())
    }

    /// How many viewers watch a campaign now.
    pub fn viewers(&self, campaign_id: Uuid) -> usize {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .get(&campaign_id)
            .map_or(0, broadcast::Sender::receiver_count)
    }

    /// Database reads made for viewers since start (one per change of a watched campaign).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The sender of a campaign with viewers; forgets the channel of one nobody watches any more.
    fn watched(&self, campaign_id: Uuid) -> Option<broadcast::Sender<Arc<CampaignTotals>>> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        match channels.get(&campaign_id) {
            Some(sender) if sender.receiver_count() > 0 => Some(sender.clone()),
            Some(_) => {
                channels.remove(&campaign_id);
                None
            }
            None => None,
        }
    }

    /// A campaign's totals changed (called after the change committed): its viewers get the new
    /// figures, read once for all of them. A failed read is logged; the next change catches up.
    pub async fn changed(&self, store: &dyn Store, cache: &dyn TotalsCache, campaign_id: Uuid) {
        let Some(sender) = self.watched(campaign_id) else {
            return;
        };
        self.reads.fetch_add(1, Ordering::Relaxed);
        match current(store, cache, campaign_id).await {
            Ok(Some(found)) => {
                // No receiver left is not an error: the last viewer just went away.
                let viewers = sender.send(Arc::new(found.totals)).unwrap_or(0);
                crate::metrics::totals_stream(viewers);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%campaign_id, error = %e, "live totals: reading the new totals failed")
            }
        }
    }

    /// Ends every stream (the server is stopping) and refuses new ones.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
