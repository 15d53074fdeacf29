//! The dashboard's state, changed only by [`App::update`] from one stream of events; drawing
//! reads it and nothing else.

use std::collections::{BTreeMap, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// How many samples the sparklines keep.
pub const HISTORY: usize = 120;

/// One campaign against its goal.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CampaignView {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Currency code.
    pub currency: String,
    /// Raised so far (net of refunds), as the server writes it.
    pub raised: String,
    /// The goal, as the server writes it.
    pub goal: String,
    /// raised / goal, clamped to 0..=1.
    pub ratio: f64,
    /// Completed donations counted.
    pub donations: i64,
    /// Whether it still accepts donations.
    pub active: bool,
}

/// A row of the recent donations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DonationRow {
    /// When it was made (`HH:MM:SS`).
    pub at: String,
    /// Donor e-mail.
    pub email: String,
    /// Amount and currency.
    pub amount: String,
    /// Status.
    pub status: String,
}

/// A row of the recent webhooks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WebhookRow {
    /// When it arrived (`HH:MM:SS`).
    pub at: String,
    /// The intent.
    pub intent: String,
    /// The status it asked for.
    pub status: String,
    /// processed / ignored / rejected / …
    pub outcome: String,
}

/// One backend's health.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Backend {
    /// database / bus / cache.
    pub name: String,
    /// up / down.
    pub status: String,
    /// sqlite, postgres, rabbitmq, …
    pub kind: String,
}

/// Everything one poll of the server brought back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Server time of the poll, `HH:MM:SS`.
    pub at: String,
    /// Seconds since the watch started, for rates.
    pub elapsed: f64,
    /// ready / degraded / unavailable.
    pub readiness: String,
    /// Each backend.
    pub backends: Vec<Backend>,
    /// Campaigns with their totals.
    pub campaigns: Vec<CampaignView>,
    /// All donations ever made.
    pub donations_total: i64,
    /// Outbox rows waiting.
    pub outbox_pending: i64,
    /// Age of the oldest waiting row, seconds.
    pub outbox_oldest_age: Option<f64>,
    /// Recent donations of the selected campaign.
    pub donations: Vec<DonationRow>,
    /// Recent webhook deliveries.
    pub webhooks: Vec<WebhookRow>,
    /// Webhook deliveries by outcome.
    pub webhook_outcomes: BTreeMap<String, i64>,
    /// Dead letters, one line each.
    pub dead_letters: Vec<String>,
    /// Why an operator panel is empty (e.g. no API key).
    pub notice: Option<String>,
}

/// What happens.
#[derive(Clone, Debug)]
pub enum Event {
    /// A key press.
    Key(KeyEvent),
    /// Time passes (redraw).
    Tick,
    /// A poll succeeded.
    Data(Box<Snapshot>),
    /// A poll failed: the server is unreachable.
    Disconnected(String),
    /// The server answered 429: it is up, and the poller slows down.
    Throttled(String),
}

/// The dashboard state.
#[derive(Clone, Debug, Default)]
pub struct App {
    /// The server watched.
    pub server: String,
    /// The last data (kept while disconnected).
    pub snapshot: Option<Snapshot>,
    /// Whether the last poll succeeded.
    pub connected: bool,
    /// Why the last poll failed.
    pub error: Option<String>,
    /// The server's rate limit answered the last poll.
    pub throttled: Option<String>,
    /// Selected campaign index.
    pub selected: usize,
    /// The campaign to select when it appears (from `--campaign`).
    pub wanted: Option<String>,
    /// Data is not applied while paused.
    pub paused: bool,
    /// The help overlay is open.
    pub help: bool,
    /// The user asked to leave.
    pub quit: bool,
    /// Donations per second, one sample per poll.
    pub rate: VecDeque<u64>,
    /// Outbox pending, one sample per poll.
    pub pending: VecDeque<u64>,
    last_total: Option<(i64, f64)>,
}

impl App {
    /// A dashboard for `server`, starting on `campaign` if given.
    pub fn new(server: &str, campaign: Option<String>) -> App {
        App {
            server: server.to_string(),
            wanted: campaign,
            ..App::default()
        }
    }

    /// The selected campaign's id.
    pub fn selected_campaign(&self) -> Option<&str> {
        self.snapshot
            .as_ref()?
            .campaigns
            .get(self.selected)
            .map(|c| c.id.as_str())
    }

    /// Applies one event.
    pub fn update(&mut self, event: Event) {
        match event {
            Event::Tick => {}
            Event::Key(key) => self.key(key),
            Event::Disconnected(error) => {
                self.connected = false;
                self.error = Some(error);
            }
            Event::Throttled(why) => {
                self.connected = true;
                self.error = None;
                self.throttled = Some(why);
            }
            Event::Data(snapshot) => {
                self.connected = true;
                self.error = None;
                self.throttled = None;
                if self.paused {
                    return;
                }
                if let Some((total, at)) = self.last_total {
                    let dt = snapshot.elapsed - at;
                    if dt > 0.0 {
                        let per_second = (snapshot.donations_total - total).max(0) as f64 / dt;
                        push(&mut self.rate, per_second.round() as u64);
                    }
                }
                self.last_total = Some((snapshot.donations_total, snapshot.elapsed));
                push(&mut self.pending, snapshot.outbox_pending.max(0) as u64);
                if let Some(wanted) = &self.wanted
                    && let Some(i) = snapshot.campaigns.iter().position(|c| &c.id == wanted)
                {
                    self.selected = i;
                    self.wanted = None;
                }
                // Keep the same campaign selected when the list changes around it.
                let current = self.selected_campaign().map(str::to_string);
                if let Some(id) = current
                    && let Some(i) = snapshot.campaigns.iter().position(|c| c.id == id)
                {
                    self.selected = i;
                }
                self.selected = self
                    .selected
                    .min(snapshot.campaigns.len().saturating_sub(1));
                self.snapshot = Some(*snapshot);
            }
        }
    }

    fn key(&mut self, key: KeyEvent) {
        let count = self.snapshot.as_ref().map_or(0, |s| s.campaigns.len());
        match key.code {
            KeyCode::Esc if self.help => self.help = false,
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => self.quit = true,
            KeyCode::Char('?') | KeyCode::Char('h') => self.help = !self.help,
            KeyCode::Char('p') | KeyCode::Char(' ') => self.paused = !self.paused,
            KeyCode::Right | KeyCode::Tab | KeyCode::Down | KeyCode::Char('j') if count > 0 => {
                self.selected = (self.selected + 1) % count
            }
            KeyCode::Left | KeyCode::BackTab | KeyCode::Up | KeyCode::Char('k') if count > 0 => {
                self.selected = (self.selected + count - 1) % count
            }
            _ => {}
        }
    }
}

fn push(samples: &mut VecDeque<u64>, value: u64) {
    if samples.len() == HISTORY {
        samples.pop_front();
    }
    samples.push_back(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> Event {
        Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn snapshot(total: i64, elapsed: f64, ids: &[&str]) -> Box<Snapshot> {
        Box::new(Snapshot {
            elapsed,
            donations_total: total,
            campaigns: ids
                .iter()
                .map(|id| CampaignView {
                    id: id.to_string(),
                    ..CampaignView::default()
                })
                .collect(),
            ..Snapshot::default()
        })
    }

    #[test]
    fn keys_select_pause_help_and_quit() {
        let mut app = App::new("http://x", None);
        app.update(Event::Data(snapshot(0, 0.0, &["a", "b", "c"])));
        app.update(key(KeyCode::Right));
        assert_eq!(app.selected_campaign(), Some("b"));
        app.update(key(KeyCode::Left));
        app.update(key(KeyCode::Left));
        assert_eq!(app.selected_campaign(), Some("c"), "wraps around");
        app.update(key(KeyCode::Char('?')));
        assert!(app.help);
        app.update(key(KeyCode::Esc));
        assert!(!app.help && !app.quit, "Esc closes the help first");
        app.update(key(KeyCode::Char('p')));
        app.update(Event::Data(snapshot(10, 1.0, &["z"])));
        assert_eq!(
            app.selected_campaign(),
            Some("c"),
            "paused: data is not applied"
        );
        app.update(key(KeyCode::Char('q')));
        assert!(app.quit);
    }

    #[test]
    fn rates_come_from_successive_polls_and_disconnection_keeps_the_data() {
        let mut app = App::new("http://x", Some("b".into()));
        app.update(Event::Data(snapshot(10, 0.0, &["a", "b"])));
        assert_eq!(app.selected_campaign(), Some("b"), "--campaign is honoured");
        app.update(Event::Data(snapshot(30, 2.0, &["a", "b"])));
        assert_eq!(app.rate.back(), Some(&10));
        app.update(Event::Throttled("429".into()));
        assert!(app.connected, "a rate limit is not a disconnection");
        app.update(Event::Disconnected("connection refused".into()));
        assert!(!app.connected);
        assert!(app.snapshot.is_some());
        app.update(Event::Data(snapshot(30, 3.0, &["new", "a", "b"])));
        assert!(app.connected);
        assert_eq!(
            app.selected_campaign(),
            Some("b"),
            "the selection follows its campaign"
        );
    }
}
