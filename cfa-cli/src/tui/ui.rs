//! Drawing the dashboard: a pure function of [`App`].

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, Clear, Gauge, List, ListItem, Paragraph, Row, Sparkline, Table,
};

use super::app::App;

/// What an operator panel says when the server wants a key this watch does not have.
pub const NEEDS_KEY: &str = "needs an operator key (--api-key)";

fn needs_key(app: &App) -> bool {
    app.snapshot.as_ref().is_some_and(|s| !s.operator)
}

/// The screen's regions: status bar, campaigns and health, sparklines, lists, footer.
fn regions(area: Rect) -> [Rect; 5] {
    Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(5),
        Constraint::Min(6),
        Constraint::Length(1),
    ])
    .areas(area)
}

/// How many campaigns the list shows on a terminal of `area` (two lines each).
pub fn campaign_rows(area: Rect) -> usize {
    let [_, middle, ..] = regions(area);
    (middle.height.saturating_sub(2) / 2).max(1) as usize
}

fn every(app: &App) -> String {
    let ms = app.interval.as_millis();
    if ms >= 1000 && ms.is_multiple_of(1000) {
        format!("every {} s", ms / 1000)
    } else {
        format!("every {ms} ms")
    }
}

fn outcome_color(word: &str) -> Color {
    match word {
        "COMPLETED" | "processed" | "up" | "ready" | "healthy" => Color::Green,
        "FAILED" | "rejected" | "down" | "unavailable" | "malformed" | "not_found" => Color::Red,
        _ => Color::Yellow,
    }
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let [top, middle, sparks, lists, footer] = regions(frame.area());
    status_bar(frame, top, app);
    draw_footer(frame, footer, app);
    if app.detail {
        let body = Rect::new(
            middle.x,
            middle.y,
            middle.width,
            footer.y.saturating_sub(middle.y),
        );
        draw_detail(frame, body, app);
        if app.help {
            draw_help(frame, app);
        }
        return;
    }
    let [campaigns, health] =
        Layout::horizontal([Constraint::Percentage(65), Constraint::Percentage(35)]).areas(middle);
    draw_campaigns(frame, campaigns, app);
    draw_health(frame, health, app);
    draw_sparks(frame, sparks, app);
    let [donations, webhooks, dead] = Layout::horizontal([
        Constraint::Percentage(42),
        Constraint::Percentage(40),
        Constraint::Percentage(18),
    ])
    .areas(lists);
    draw_donations(frame, donations, app);
    draw_webhooks(frame, webhooks, app);
    draw_dead(frame, dead, app);
    if app.help {
        draw_help(frame, app);
    }
}

fn status_bar(frame: &mut Frame, area: Rect, app: &App) {
    let mut spans = vec![
        Span::raw(" CareForAll watch ").bold(),
        Span::raw(format!("{} ", app.server)),
    ];
    if app.connected {
        spans.push(Span::styled("● connected", Style::new().fg(Color::Green)));
    } else {
        let why = app
            .error
            .as_deref()
            .unwrap_or("waiting for the first answer");
        spans.push(Span::styled(
            format!("✗ DISCONNECTED ({why}); retrying"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    if let Some(why) = &app.throttled {
        spans.push(Span::styled(
            format!("  rate limited ({why}); polling slower"),
            Style::new().fg(Color::Yellow),
        ));
    }
    if app.paused {
        spans.push(Span::styled("  ‖ PAUSED", Style::new().fg(Color::Yellow)));
    }
    if let Some(s) = &app.snapshot {
        spans.push(Span::raw(format!("  updated {}", s.at)));
    }
    spans.push(Span::raw(format!(", {}", every(app))).dark_gray());
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_footer(frame: &mut Frame, area: Rect, app: &App) {
    let line = if app.typing {
        Line::from(vec![
            Span::raw(" filter: /").yellow(),
            Span::raw(format!("{}▏", app.filter)).bold(),
            Span::raw("   Enter keep   Esc clear").dark_gray(),
        ])
    } else if app.detail {
        Line::from(" Enter/Esc back   ↑/↓ campaign   +/- refresh   p pause   ? help   q quit")
            .dark_gray()
    } else {
        Line::from(
            " ↑/↓ campaign   PgUp/PgDn scroll   / filter   Enter detail   +/- refresh   p pause   ? help   q quit",
        )
        .dark_gray()
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_campaigns(frame: &mut Frame, area: Rect, app: &App) {
    let visible = app.visible();
    let total = app.snapshot.as_ref().map_or(0, |s| s.campaigns.len());
    let mut title = format!(
        " Campaigns: raised against goal, {}",
        visible.len().min(app.selected + 1)
    );
    title.push_str(&format!("/{} ", visible.len()));
    if !app.filter.is_empty() {
        title.push_str(&format!("(/{} of {total}) ", app.filter));
    }
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(s) = &app.snapshot else {
        frame.render_widget(Paragraph::new("no data yet"), inner);
        return;
    };
    if s.campaigns.is_empty() {
        frame.render_widget(
            Paragraph::new("no campaigns yet: cfa-cli campaigns create --title T --goal 500"),
            inner,
        );
        return;
    }
    if visible.is_empty() {
        frame.render_widget(
            Paragraph::new(format!("no campaign matches /{} (Esc clears)", app.filter)),
            inner,
        );
        return;
    }
    // Two lines per campaign, from the app's scroll offset, the selection always on screen.
    let fit = (inner.height / 2).max(1) as usize;
    let mut first = app.offset.min(app.selected);
    if app.selected >= first + fit {
        first = app.selected + 1 - fit;
    }
    for (row, (i, c)) in visible.iter().enumerate().skip(first).take(fit).enumerate() {
        let y = inner.y + (row as u16) * 2;
        let selected = i == app.selected;
        let marker = if selected { "▶ " } else { "  " };
        let closed = if c.active { "" } else { " (closed)" };
        let title = Line::from(vec![
            Span::raw(marker),
            Span::styled(
                c.title.clone(),
                if selected {
                    Style::new().bold()
                } else {
                    Style::new()
                },
            ),
            Span::raw(format!("{closed}  {} donations", c.donations)).dark_gray(),
        ]);
        frame.render_widget(Paragraph::new(title), Rect::new(inner.x, y, inner.width, 1));
        let gauge = Gauge::default()
            .gauge_style(Style::new().fg(if selected { Color::Cyan } else { Color::Blue }))
            .ratio(c.ratio.clamp(0.0, 1.0))
            .label(match &c.raised {
                Some(raised) => format!(
                    "{raised} / {} {} ({:.0}%)",
                    c.goal,
                    c.currency,
                    c.ratio * 100.0
                ),
                None => format!("… / {} {}", c.goal, c.currency),
            });
        if y + 1 < inner.y + inner.height {
            frame.render_widget(
                gauge,
                Rect::new(inner.x + 2, y + 1, inner.width.saturating_sub(2), 1),
            );
        }
    }
}

fn draw_health(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::bordered().title(" Health ");
    let mut lines = Vec::new();
    match (&app.snapshot, app.connected) {
        (_, false) => lines.push(Line::from(Span::styled(
            "server unreachable",
            Style::new().fg(Color::Red),
        ))),
        (Some(s), true) => {
            lines.push(Line::from(vec![
                Span::raw("server     "),
                Span::styled(
                    s.readiness.clone(),
                    Style::new().fg(outcome_color(&s.readiness)),
                ),
            ]));
            for b in &s.backends {
                lines.push(Line::from(vec![
                    Span::raw(format!("{:<11}", b.name)),
                    Span::styled(b.status.clone(), Style::new().fg(outcome_color(&b.status))),
                    Span::raw(format!(" {}", b.kind)).dark_gray(),
                ]));
            }
            if s.operator {
                let pending = s.outbox_pending;
                let age = s
                    .outbox_oldest_age
                    .map_or("-".to_string(), |a| format!("{a:.1}s"));
                lines.push(Line::from(format!(
                    "outbox     {pending} pending, oldest {age}"
                )));
            } else {
                lines.push(Line::from(vec![
                    Span::raw("outbox     "),
                    Span::raw(NEEDS_KEY).yellow(),
                ]));
            }
        }
        (None, true) => lines.push(Line::from("…")),
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// The newest samples that fit in `area`'s inside (ratatui draws a sparkline's first ones).
fn newest(samples: &std::collections::VecDeque<Option<u64>>, area: Rect) -> Vec<Option<u64>> {
    let width = area.width.saturating_sub(2) as usize;
    let skip = samples.len().saturating_sub(width);
    samples.iter().skip(skip).copied().collect()
}

fn spark(
    frame: &mut Frame,
    area: Rect,
    name: &str,
    samples: &std::collections::VecDeque<Option<u64>>,
    colour: Color,
    app: &App,
) {
    if needs_key(app) {
        frame.render_widget(
            Paragraph::new(Span::raw(NEEDS_KEY).yellow())
                .block(Block::bordered().title(format!(" {name} "))),
            area,
        );
        return;
    }
    let last = match samples.back() {
        Some(Some(v)) => v.to_string(),
        Some(None) => "no answer".to_string(),
        None => "-".to_string(),
    };
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" {name}: {last} ")))
            .data(newest(samples, area))
            .style(Style::new().fg(colour))
            .absent_value_symbol("·")
            .absent_value_style(Style::new().fg(Color::Red)),
        area,
    );
}

fn draw_sparks(frame: &mut Frame, area: Rect, app: &App) {
    let [rate, pending] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    spark(frame, rate, "Donations/s", &app.rate, Color::Green, app);
    spark(
        frame,
        pending,
        "Outbox pending",
        &app.pending,
        Color::Yellow,
        app,
    );
}

fn draw_donations(frame: &mut Frame, area: Rect, app: &App) {
    let title = match app.selected_view() {
        Some(c) => format!(" Recent donations: {} ", c.title),
        None => " Recent donations ".to_string(),
    };
    if needs_key(app) {
        frame.render_widget(
            Paragraph::new(Span::raw(NEEDS_KEY).yellow()).block(Block::bordered().title(title)),
            area,
        );
        return;
    }
    let rows: Vec<Row> = app
        .snapshot
        .iter()
        .flat_map(|s| s.donations.iter())
        .map(|d| {
            Row::new(vec![
                Cell::from(d.at.clone()),
                Cell::from(d.amount.clone()),
                Cell::from(Span::styled(
                    d.status.clone(),
                    Style::new().fg(outcome_color(&d.status)),
                )),
                Cell::from(d.email.clone()),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(11),
            Constraint::Length(9),
            Constraint::Fill(1),
        ],
    )
    .block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

fn draw_webhooks(frame: &mut Frame, area: Rect, app: &App) {
    let mut title = " Webhooks ".to_string();
    if let Some(s) = &app.snapshot
        && !s.webhook_outcomes.is_empty()
    {
        let counts: Vec<String> = s
            .webhook_outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        title = format!(" Webhooks: {} ", counts.join(", "));
    }
    let block = Block::bordered().title(title);
    if needs_key(app) {
        frame.render_widget(
            Paragraph::new(Span::raw(NEEDS_KEY).yellow()).block(block),
            area,
        );
        return;
    }
    let rows: Vec<Row> = app
        .snapshot
        .iter()
        .flat_map(|s| s.webhooks.iter())
        .map(|w| {
            Row::new(vec![
                Cell::from(w.at.clone()),
                Cell::from(w.status.clone()),
                Cell::from(Span::styled(
                    w.outcome.clone(),
                    Style::new().fg(outcome_color(&w.outcome)),
                )),
                Cell::from(w.intent.clone()),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Fill(1),
        ],
    )
    .block(block);
    frame.render_widget(table, area);
}

fn draw_dead(frame: &mut Frame, area: Rect, app: &App) {
    if needs_key(app) {
        frame.render_widget(
            Paragraph::new(Span::raw(NEEDS_KEY).yellow())
                .wrap(ratatui::widgets::Wrap { trim: true })
                .block(Block::bordered().title(" Dead letters ")),
            area,
        );
        return;
    }
    let items: Vec<ListItem> = app
        .snapshot
        .iter()
        .flat_map(|s| s.dead_letters.iter())
        .map(|d| ListItem::new(d.clone()).red())
        .collect();
    let count = items.len();
    let list = if count == 0 {
        List::new(vec![ListItem::new("none").green()])
    } else {
        List::new(items)
    };
    frame.render_widget(
        list.block(Block::bordered().title(format!(" Dead letters: {count} "))),
        area,
    );
}

fn draw_help(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let width = 52.min(area.width);
    let height = 15.min(area.height);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    let text = vec![
        Line::from("↑/↓, j/k, Tab   choose the campaign"),
        Line::from("PgUp/PgDn       scroll a page; Home/End, g/G ends"),
        Line::from("/               filter by title or id (Esc clears)"),
        Line::from("Enter           the campaign's detail (Esc back)"),
        Line::from("+ / -           refresh faster / slower"),
        Line::from("p, space        pause / resume updates"),
        Line::from("?, h            this help (Esc closes)"),
        Line::from("q, Esc, Ctrl-C  quit"),
        Line::from(""),
        Line::from(format!("server: {}", app.server)),
        Line::from(format!("refreshing {}", every(app))),
    ];
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(" Help ")),
        popup,
    );
}

fn draw_detail(frame: &mut Frame, area: Rect, app: &App) {
    let Some(c) = app.selected_view() else {
        frame.render_widget(Paragraph::new("no campaign selected"), area);
        return;
    };
    let block = Block::bordered().title(format!(" Campaign: {} ", c.title));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [facts, lists] = Layout::vertical([Constraint::Length(4), Constraint::Min(3)]).areas(inner);
    let raised = c.raised.clone().unwrap_or_else(|| "…".into());
    let facts_text = vec![
        Line::from(format!(
            "id {}   {}   {}",
            c.id,
            if c.active { "ACTIVE" } else { "CLOSED" },
            c.currency
        )),
        Line::from(format!(
            "raised {raised} of {} {} ({:.0}%), {} donations from {} donors",
            c.goal,
            c.currency,
            c.ratio * 100.0,
            c.donations,
            c.donors
        )),
    ];
    frame.render_widget(Paragraph::new(facts_text), facts);
    let gauge = Gauge::default()
        .gauge_style(Style::new().fg(Color::Cyan))
        .ratio(c.ratio.clamp(0.0, 1.0));
    frame.render_widget(gauge, Rect::new(facts.x, facts.y + 2, facts.width, 1));
    draw_detail_lists(frame, lists, app);
}

/// The detail's recent donations and the refunds among them.
fn draw_detail_lists(frame: &mut Frame, lists: Rect, app: &App) {
    let [recent, refunds] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(lists);
    if needs_key(app) {
        for (area, title) in [(recent, " Recent donations "), (refunds, " Refunds ")] {
            frame.render_widget(
                Paragraph::new(Span::raw(NEEDS_KEY).yellow()).block(Block::bordered().title(title)),
                area,
            );
        }
        return;
    }
    let donations = app.snapshot.iter().flat_map(|s| s.donations.iter());
    let rows: Vec<Row> = donations
        .clone()
        .map(|d| {
            Row::new(vec![
                Cell::from(d.at.clone()),
                Cell::from(d.amount.clone()),
                Cell::from(Span::styled(
                    d.status.clone(),
                    Style::new().fg(outcome_color(&d.status)),
                )),
                Cell::from(d.email.clone()),
            ])
        })
        .collect();
    let count = rows.len();
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Length(13),
                Constraint::Length(9),
                Constraint::Fill(1),
            ],
        )
        .block(Block::bordered().title(format!(" Recent donations: {count} "))),
        recent,
    );
    let refunded: Vec<Row> = donations
        .filter(|d| !d.refunded.is_empty())
        .map(|d| {
            Row::new(vec![
                Cell::from(d.at.clone()),
                Cell::from(d.refunded.clone()),
                Cell::from(format!("of {}", d.amount)),
                Cell::from(d.email.clone()),
            ])
        })
        .collect();
    let body = if refunded.is_empty() {
        Table::new(
            vec![Row::new(vec![Cell::from("none among these donations")])],
            [Constraint::Fill(1)],
        )
    } else {
        Table::new(
            refunded,
            [
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(14),
                Constraint::Fill(1),
            ],
        )
    };
    frame.render_widget(body.block(Block::bordered().title(" Refunds ")), refunds);
}
