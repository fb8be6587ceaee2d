//! The report as terminal text: findings grouped by category, groups and findings ordered by
//! impact, each with where, how often, example traces and the fix.

use std::fmt::Write;

use crate::finding::{Category, Finding, Report};

/// Renders `report` (already sorted) for a terminal.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.scanned;
    if report.since_seconds > 0 {
        let _ = writeln!(
            out,
            "threadline doctor: {} traces, {} spans, {} services in the last {}",
            s.traces,
            s.spans,
            s.services,
            window(report.since_seconds)
        );
    } else {
        let _ = writeln!(out, "threadline doctor");
    }
    if report.findings.is_empty() {
        let _ = writeln!(out, "\nNo findings.");
        return out;
    }
    // Groups in the order of their most important finding.
    let mut categories: Vec<Category> = Vec::new();
    for f in &report.findings {
        if !categories.contains(&f.category) {
            categories.push(f.category);
        }
    }
    for category in categories {
        let group: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| f.category == category)
            .collect();
        let _ = writeln!(out, "\n== {} ({}) ==", category.title(), group.len());
        for f in group {
            finding(&mut out, f);
        }
    }
    let _ = writeln!(
        out,
        "\n{} findings: {} critical, {} warning, {} info",
        report.findings.len(),
        count(report, crate::Severity::Critical),
        count(report, crate::Severity::Warning),
        count(report, crate::Severity::Info)
    );
    out
}

fn count(report: &Report, severity: crate::Severity) -> usize {
    report
        .findings
        .iter()
        .filter(|f| f.severity == severity)
        .count()
}

fn finding(out: &mut String, f: &Finding) {
    let _ = writeln!(
        out,
        "\n[{}] {}",
        f.severity.as_str().to_uppercase(),
        f.title
    );
    let mut place = Vec::new();
    if let Some(hop) = &f.hop {
        place.push(format!("hop {} → {}", hop.from, hop.to));
    } else if !f.services.is_empty() {
        place.push(format!("where {}", f.services.join(", ")));
    }
    if let Some(attribute) = &f.attribute {
        // Span-name findings carry the route template there, the others an attribute key.
        let label = match f.category {
            Category::SpanNames => "template",
            _ => "key",
        };
        place.push(format!("{label} {attribute}"));
    }
    if f.total > 0 {
        place.push(format!("{} of {}", f.count, f.total));
    } else if f.count > 1 {
        place.push(format!("{} times", f.count));
    }
    if !place.is_empty() {
        let _ = writeln!(out, "  {}", place.join(" · "));
    }
    wrap(out, "  ", "  ", &f.detail);
    for e in &f.examples {
        let mut line = format!("  trace {}", e.trace_id);
        if let Some(linked) = &e.linked_trace_id {
            let _ = write!(line, " ↔ {linked}");
        }
        if !e.note.is_empty() {
            let _ = write!(line, "  ({})", e.note);
        }
        let _ = writeln!(out, "{line}");
    }
    wrap(out, "  fix: ", "       ", &f.fix);
    if let Some(config) = &f.fix_config {
        for line in config.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
}

/// Terminal width the prose of a finding is wrapped to (titles, ids and snippets are not).
const WIDTH: usize = 100;

/// Writes `text` word-wrapped at [`WIDTH`]: `first` before the first line, `indent` before the
/// others.
fn wrap(out: &mut String, first: &str, indent: &str, text: &str) {
    let mut line = String::from(first);
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            let _ = writeln!(out, "{line}");
            line = String::from(indent);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    let _ = writeln!(out, "{line}");
}

fn window(seconds: u64) -> String {
    match seconds {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
