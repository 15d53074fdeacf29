//! The caches in front of the totals read model: in-process, and in-process in front of Redis.
//! Entries are invalidated by the totals consumer when the read model changes; the TTL is only a
//! safety net.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use crate::storage::CampaignTotals;

/// A campaign's cached totals, with a memo of their rendering.
pub struct Entry {
    /// The figures.
    pub totals: CampaignTotals,
    /// When they were read from the read model (or, through Redis, cached there).
    pub at: Instant,
    rendered: OnceLock<Bytes>,
}

impl Entry {
    fn new(totals: CampaignTotals, at: Instant) -> Arc<Entry> {
        Arc::new(Entry {
            totals,
            at,
            rendered: OnceLock::new(),
        })
    }

    /// The totals as `render` renders them, rendered once per entry: a read served from the
    /// cache does no work the previous one did (an entry is replaced, never changed, when the
    /// totals change).
    pub fn rendered(&self, render: impl FnOnce(&CampaignTotals) -> Bytes) -> Bytes {
        self.rendered.get_or_init(|| render(&self.totals)).clone()
    }
}

/// A cache of totals in front of the read model.
#[async_trait]
pub trait TotalsCache: Send + Sync + 'static {
    /// Cached totals and when they were cached; counts a hit or a miss.
    async fn get(&self, campaign_id: Uuid) -> Option<Arc<Entry>>;
    /// A counter that moves on every invalidation; read it before reading the read model.
    fn generation(&self) -> u64;
    /// Caches totals just read from the read model, unless an invalidation happened since
    /// `generation` was read (the totals read may then be older than the change).
    async fn put(&self, totals: CampaignTotals, generation: u64);
    /// Drops a campaign's entry (its read model changed).
    async fn invalidate(&self, campaign_id: Uuid);
    /// Hits and misses since start.
    fn counts(&self) -> (u64, u64);
}

/// The in-process cache: entries are invalidated when the read model changes; the TTL is only a
/// safety net.
pub struct LocalCache {
    entries: moka::future::Cache<Uuid, Arc<Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
    generation: AtomicU64,
}

impl LocalCache {
    /// A cache whose entries live at most `ttl`.
    pub fn new(ttl: Duration) -> LocalCache {
        LocalCache {
            entries: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl TotalsCache for LocalCache {
    async fn get(&self, campaign_id: Uuid) -> Option<Arc<Entry>> {
        let found = self.entries.get(&campaign_id).await;
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    async fn put(&self, totals: CampaignTotals, generation: u64) {
        if self.generation() == generation {
            self.entries
                .insert(totals.campaign_id, Entry::new(totals, Instant::now()))
                .await;
        }
    }

    async fn invalidate(&self, campaign_id: Uuid) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate(&campaign_id).await;
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// The in-process cache in front of Redis in front of the read model. A Redis hit fills the
/// local level; invalidation clears both. With Redis, the local level lives at most a second, so
/// a change made through another replica shows within that.
pub struct TwoLevelCache {
    local: LocalCache,
    redis: Arc<crate::redis_cache::FastPath>,
    ttl: Duration,
}

impl TwoLevelCache {
    /// A two-level cache whose Redis entries live `ttl`.
    pub fn new(redis: Arc<crate::redis_cache::FastPath>, ttl: Duration) -> TwoLevelCache {
        TwoLevelCache {
            local: LocalCache::new(ttl.min(Duration::from_secs(1))),
            redis,
            ttl,
        }
    }

    fn key(campaign_id: Uuid) -> String {
        format!("totals:{campaign_id}")
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Cached {
    totals: CampaignTotals,
    cached_at_ms: i64,
}

#[async_trait]
impl TotalsCache for TwoLevelCache {
    async fn get(&self, campaign_id: Uuid) -> Option<Arc<Entry>> {
        if let Some(found) = self.local.entries.get(&campaign_id).await {
            self.local.hits.fetch_add(1, Ordering::Relaxed);
            return Some(found);
        }
        let cached = self
            .redis
            .get(&Self::key(campaign_id))
            .await
            .and_then(|bytes| serde_json::from_slice::<Cached>(&bytes).ok());
        let Some(cached) = cached else {
            self.local.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.local.hits.fetch_add(1, Ordering::Relaxed);
        let age = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(cached.cached_at_ms)
            .max(0);
        let at = Instant::now()
            .checked_sub(Duration::from_millis(u64::try_from(age).unwrap_or(0)))
            .unwrap_or_else(Instant::now);
        let entry = Entry::new(cached.totals, at);
        self.local.entries.insert(campaign_id, entry.clone()).await;
        Some(entry)
    }

    fn generation(&self) -> u64 {
        self.local.generation()
    }

    async fn put(&self, totals: CampaignTotals, generation: u64) {
        if self.local.generation() != generation {
            return;
        }
        let cached = Cached {
            totals: totals.clone(),
            cached_at_ms: chrono::Utc::now().timestamp_millis(),
        };
        if let Ok(bytes) = serde_json::to_vec(&cached) {
            self.redis
                .set(&Self::key(totals.campaign_id), &bytes, self.ttl)
                .await;
        }
        self.local.put(totals, generation).await;
    }

    async fn invalidate(&self, campaign_id: Uuid) {
        self.redis.delete(&Self::key(campaign_id)).await;
        self.local.invalidate(campaign_id).await;
    }

    fn counts(&self) -> (u64, u64) {
        self.local.counts()
    }
}
