//! Drawing the dashboard: a pure function of [`App`].

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, Clear, Gauge, List, ListItem, Paragraph, Row, Sparkline, Table,
};

use super::app::App;

fn outcome_color(word: &str) -> Color {
    match word {
        "COMPLETED" | "processed" | "up" | "ready" | "healthy" => Color::Green,
        "FAILED" | "rejected" | "down" | "unavailable" | "malformed" | "not_found" => Color::Red,
        _ => Color::Yellow,
    }
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let [top, middle, sparks, lists, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(5),
        Constraint::Min(6),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    status_bar(frame, top, app);
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
    frame.render_widget(
        Paragraph::new(" ←/→ campaign   p pause   ? help   q quit").dark_gray(),
        footer,
    );
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
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_campaigns(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::bordered().title(" Campaigns: raised against goal ");
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
    // Two lines per campaign; scroll so the selected one shows.
    let fit = (inner.height / 2).max(1) as usize;
    let first = app.selected.saturating_sub(fit - 1);
    for (row, (i, c)) in s
        .campaigns
        .iter()
        .enumerate()
        .skip(first)
        .take(fit)
        .enumerate()
    {
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
            .label(format!(
                "{} / {} {} ({:.0}%)",
                c.raised,
                c.goal,
                c.currency,
                c.ratio * 100.0
            ));
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
            let pending = s.outbox_pending;
            let age = s
                .outbox_oldest_age
                .map_or("-".to_string(), |a| format!("{a:.1}s"));
            lines.push(Line::from(format!(
                "outbox     {pending} pending, oldest {age}"
            )));
        }
        (None, true) => lines.push(Line::from("…")),
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_sparks(frame: &mut Frame, area: Rect, app: &App) {
    let [rate, pending] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let rate_data: Vec<u64> = app.rate.iter().copied().collect();
    let pending_data: Vec<u64> = app.pending.iter().copied().collect();
    let last_rate = rate_data.last().copied().unwrap_or(0);
    let last_pending = pending_data.last().copied().unwrap_or(0);
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" Donations/s: {last_rate} ")))
            .data(&rate_data)
            .style(Style::new().fg(Color::Green)),
        rate,
    );
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(" Outbox pending: {last_pending} ")))
            .data(&pending_data)
            .style(Style::new().fg(Color::Yellow)),
        pending,
    );
}

fn draw_donations(frame: &mut Frame, area: Rect, app: &App) {
    let title = match app
        .snapshot
        .as_ref()
        .and_then(|s| s.campaigns.get(app.selected))
    {
        Some(c) => format!(" Recent donations: {} ", c.title),
        None => " Recent donations ".to_string(),
    };
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
    let notice = app.snapshot.as_ref().and_then(|s| s.notice.clone());
    let block = Block::bordered().title(title);
    if let Some(notice) = notice {
        frame.render_widget(Paragraph::new(notice).block(block), area);
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
    let width = 46.min(area.width);
    let height = 11.min(area.height);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    let text = vec![
        Line::from("←/→, Tab, j/k   choose the campaign"),
        Line::from("p, space        pause / resume updates"),
        Line::from("?, h            this help (Esc closes)"),
        Line::from("q, Esc, Ctrl-C  quit"),
        Line::from(""),
        Line::from(format!("server: {}", app.server)),
        Line::from("data refreshes every --interval-ms"),
    ];
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(" Help ")),
        popup,
    );
}
