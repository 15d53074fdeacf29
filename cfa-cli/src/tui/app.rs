//! The dashboard's state, changed only by [`App::update`] from one stream of events; drawing
//! reads it and nothing else.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// How many samples the sparklines keep.
pub const HISTORY: usize = 120;
/// The refresh periods `+` and `-` step through.
pub const INTERVALS_MS: &[u64] = &[250, 500, 1000, 2000, 5000, 10_000];
/// At most this many campaigns get fresh totals per poll (the visible ones).
pub const TOTALS_PER_POLL: usize = 30;

/// One campaign against its goal.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CampaignView {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Currency code.
    pub currency: String,
    /// Raised so far (net of refunds), with the currency's decimals; `None` until its totals
    /// have been read (only visible campaigns' are).
    pub raised: Option<String>,
    /// The goal, with the currency's decimals.
    pub goal: String,
    /// raised / goal, clamped to 0..=1.
    pub ratio: f64,
    /// Completed donations counted.
    pub donations: i64,
    /// Distinct donors.
    pub donors: i64,
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
    /// How much of it was refunded (empty when nothing was).
    pub refunded: String,
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
    /// The operator views answered (false: the server wants a key this watch does not have).
    pub operator: bool,
}

/// What happens.
#[derive(Clone, Debug)]
pub enum Event {
    /// A key press.
    Key(KeyEvent),
    /// The terminal is now this many columns and rows.
    Resize(u16, u16),
    /// Time passes (redraw).
    Tick,
    /// A poll succeeded.
    Data(Box<Snapshot>),
    /// A poll failed: the server is unreachable.
    Disconnected(String),
    /// The server answered 429: it is up, and the poller slows down.
    Throttled(String),
}

/// What the poller should fetch, from what the dashboard shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The selected campaign (its recent donations).
    pub selected: Option<String>,
    /// Campaigns whose totals are on screen.
    pub totals_for: Vec<String>,
    /// The selected campaign's detail is open (more donations, refunds).
    pub detail: bool,
    /// Time between polls.
    pub interval: Duration,
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
    /// Selected campaign, as an index into [`App::visible`].
    pub selected: usize,
    /// First campaign of the list on screen, as an index into [`App::visible`].
    pub offset: usize,
    /// Campaigns the list shows at once (from the terminal's size).
    pub page: usize,
    /// The campaign to select when it appears (from `--campaign`).
    pub wanted: Option<String>,
    /// Only campaigns whose title or id contains this (case-insensitive).
    pub filter: String,
    /// `/` was pressed: keys type into the filter.
    pub typing: bool,
    /// The selected campaign's detail is open.
    pub detail: bool,
    /// Time between polls.
    pub interval: Duration,
    /// Data is not applied while paused.
    pub paused: bool,
    /// The help overlay is open.
    pub help: bool,
    /// The user asked to leave.
    pub quit: bool,
    /// Donations per second, one sample per poll; `None` for a poll that failed.
    pub rate: VecDeque<Option<u64>>,
    /// Outbox pending, one sample per poll; `None` for a poll that failed.
    pub pending: VecDeque<Option<u64>>,
    last_total: Option<(i64, f64)>,
}

impl App {
    /// A dashboard for `server`, starting on `campaign` if given.
    pub fn new(server: &str, campaign: Option<String>) -> App {
        App {
            server: server.to_string(),
            wanted: campaign,
            page: 4,
            interval: Duration::from_secs(1),
            ..App::default()
        }
    }

    /// The campaigns the list shows: all of them, or those matching the filter.
    pub fn visible(&self) -> Vec<&CampaignView> {
        let needle = self.filter.to_lowercase();
        self.snapshot
            .iter()
            .flat_map(|s| s.campaigns.iter())
            .filter(|c| {
                needle.is_empty()
                    || c.title.to_lowercase().contains(&needle)
                    || c.id.to_lowercase().contains(&needle)
            })
            .collect()
    }

    /// The selected campaign.
    pub fn selected_view(&self) -> Option<&CampaignView> {
        self.visible().get(self.selected).copied()
    }

    /// The selected campaign's id.
    pub fn selected_campaign(&self) -> Option<&str> {
        self.selected_view().map(|c| c.id.as_str())
    }

    /// What the poller should fetch next.
    pub fn request(&self) -> Request {
        let visible = self.visible();
        let mut totals_for: Vec<String> = visible
            .iter()
            .skip(self.offset)
            .take(self.page.clamp(1, TOTALS_PER_POLL))
            .map(|c| c.id.clone())
            .collect();
        let selected = self.selected_campaign().map(str::to_string);
        if let Some(id) = &selected
            && !totals_for.contains(id)
        {
            totals_for.push(id.clone());
        }
        Request {
            selected: selected.or_else(|| self.wanted.clone()),
            totals_for,
            detail: self.detail,
            interval: self.interval,
        }
    }

    /// Applies one event.
    pub fn update(&mut self, event: Event) {
        match event {
            Event::Tick => {}
            Event::Key(key) => self.key(key),
            Event::Resize(width, height) => {
                self.page =
                    super::ui::campaign_rows(ratatui::layout::Rect::new(0, 0, width, height));
                self.follow();
            }
            Event::Disconnected(error) => {
                self.connected = false;
                self.error = Some(error);
                self.gap();
            }
            Event::Throttled(why) => {
                self.connected = true;
                self.error = None;
                self.throttled = Some(why);
                self.gap();
            }
            Event::Data(snapshot) => self.data(*snapshot),
        }
    }

    /// A poll that brought nothing: a hole in the sparklines, so an outage shows.
    fn gap(&mut self) {
        if !self.paused {
            push(&mut self.rate, None);
            push(&mut self.pending, None);
        }
    }

    fn data(&mut self, snapshot: Snapshot) {
        self.connected = true;
        self.error = None;
        self.throttled = None;
        if self.paused {
            return;
        }
        if snapshot.operator {
            if let Some((total, at)) = self.last_total {
                let dt = snapshot.elapsed - at;
                if dt > 0.0 {
                    let per_second = (snapshot.donations_total - total).max(0) as f64 / dt;
                    push(&mut self.rate, Some(per_second.round() as u64));
                }
            }
            self.last_total = Some((snapshot.donations_total, snapshot.elapsed));
            push(
                &mut self.pending,
                Some(snapshot.outbox_pending.max(0) as u64),
            );
        }
        // `--campaign` once it is listed; else the same campaign when the list changes.
        let wanted = self.wanted.clone();
        let current = self.selected_campaign().map(str::to_string);
        self.snapshot = Some(snapshot);
        let position = |app: &App, id: &str| app.visible().iter().position(|c| c.id == id);
        if let Some(i) = wanted.as_deref().and_then(|w| position(self, w)) {
            self.selected = i;
            self.wanted = None;
        } else if let Some(i) = current.as_deref().and_then(|c| position(self, c)) {
            self.selected = i;
        }
        self.follow();
    }

    /// Keeps the selection inside the list and on screen.
    fn follow(&mut self) {
        let count = self.visible().len();
        self.selected = self.selected.min(count.saturating_sub(1));
        let page = self.page.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + page {
            self.offset = self.selected + 1 - page;
        }
        self.offset = self.offset.min(count.saturating_sub(page));
    }

    fn select(&mut self, index: usize) {
        self.selected = index;
        self.follow();
    }

    fn key(&mut self, key: KeyEvent) {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return;
        }
        if self.typing {
            match key.code {
                KeyCode::Enter => self.typing = false,
                KeyCode::Esc => {
                    self.typing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => return,
            }
            self.select(0);
            return;
        }
        let count = self.visible().len();
        let last = count.saturating_sub(1);
        let page = self.page.max(1);
        match key.code {
            KeyCode::Esc if self.help => self.help = false,
            KeyCode::Esc if self.detail => self.detail = false,
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.select(0);
            }
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Char('?') | KeyCode::Char('h') => self.help = !self.help,
            KeyCode::Char('p') | KeyCode::Char(' ') => self.paused = !self.paused,
            KeyCode::Char('/') => {
                self.typing = true;
                self.detail = false;
            }
            KeyCode::Enter if count > 0 => self.detail = !self.detail,
            KeyCode::Char('+') | KeyCode::Char('=') => self.faster(true),
            KeyCode::Char('-') | KeyCode::Char('_') => self.faster(false),
            KeyCode::Right | KeyCode::Tab | KeyCode::Down | KeyCode::Char('j') if count > 0 => {
                self.select((self.selected + 1) % count)
            }
            KeyCode::Left | KeyCode::BackTab | KeyCode::Up | KeyCode::Char('k') if count > 0 => {
                self.select((self.selected + count - 1) % count)
            }
            KeyCode::PageDown => self.select((self.selected + page).min(last)),
            KeyCode::PageUp => self.select(self.selected.saturating_sub(page)),
            KeyCode::Home | KeyCode::Char('g') => self.select(0),
            KeyCode::End | KeyCode::Char('G') => self.select(last),
            _ => {}
        }
    }

    /// `+` polls more often, `-` less, stepping through [`INTERVALS_MS`].
    fn faster(&mut self, faster: bool) {
        let now = self.interval.as_millis() as u64;
        let next = if faster {
            INTERVALS_MS.iter().rev().find(|&&ms| ms < now)
        } else {
            INTERVALS_MS.iter().find(|&&ms| ms > now)
        };
        if let Some(&ms) = next {
            self.interval = Duration::from_millis(ms);
        }
    }
}

fn push(samples: &mut VecDeque<Option<u64>>, value: Option<u64>) {
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
            operator: true,
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
        assert_eq!(app.rate.back(), Some(&Some(10)));
        app.update(Event::Throttled("429".into()));
        assert!(app.connected, "a rate limit is not a disconnection");
        app.update(Event::Disconnected("connection refused".into()));
        assert!(!app.connected);
        assert_eq!(app.rate.back(), Some(&None), "a failed poll is a gap");
        assert!(app.snapshot.is_some());
        app.update(Event::Data(snapshot(30, 3.0, &["new", "a", "b"])));
        assert!(app.connected);
        assert_eq!(
            app.selected_campaign(),
            Some("b"),
            "the selection follows its campaign"
        );
    }

    #[test]
    fn plus_and_minus_step_the_refresh_period_within_bounds() {
        let mut app = App::new("http://x", None);
        app.update(key(KeyCode::Char('+')));
        assert_eq!(app.interval, Duration::from_millis(500));
        for _ in 0..5 {
            app.update(key(KeyCode::Char('+')));
        }
        assert_eq!(
            app.interval,
            Duration::from_millis(250),
            "no faster than 250 ms"
        );
        for _ in 0..9 {
            app.update(key(KeyCode::Char('-')));
        }
        assert_eq!(app.interval, Duration::from_secs(10), "no slower than 10 s");
        assert_eq!(app.request().interval, Duration::from_secs(10));
    }

    #[test]
    fn typing_a_filter_does_not_quit_and_esc_clears_it() {
        let mut app = App::new("http://x", None);
        app.update(Event::Data(snapshot(0, 0.0, &["alpha", "beta", "quartz"])));
        app.update(key(KeyCode::Char('/')));
        for c in "qu".chars() {
            app.update(key(KeyCode::Char(c)));
        }
        assert!(!app.quit, "q is text while typing");
        assert_eq!(app.visible().len(), 1);
        app.update(key(KeyCode::Enter));
        assert_eq!(app.selected_campaign(), Some("quartz"));
        app.update(key(KeyCode::Esc));
        assert!(
            app.filter.is_empty() && !app.quit,
            "Esc clears the filter first"
        );
        assert_eq!(app.visible().len(), 3);
    }
}
