//! `report.html`: one self-contained page per run directory and per sweep (issue 18). The
//! plots are inlined as SVG, the privacy statement (and an audit's findings) rendered from
//! their Markdown, the config and the ledger summarised; the page refers to nothing outside
//! itself, so it opens anywhere with no network.

use std::path::Path;

use super::RunRecords;
use super::sweep::SweepRow;
use crate::error::{Error, Result};

/// A page: a title, key figures, then sections.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The page's title (also its first heading).
    pub title: String,
    /// Key figures, shown first: (name, value).
    pub figures: Vec<(String, String)>,
    /// Plots: (title, the SVG document).
    pub plots: Vec<(String, String)>,
    /// Sections of Markdown: (heading, text).
    pub markdown: Vec<(String, String)>,
    /// Sections of preformatted text: (heading, text).
    pub preformatted: Vec<(String, String)>,
    /// Sections of HTML built here (tables): (heading, HTML).
    pub html: Vec<(String, String)>,
}

/// `&`, `<`, `>`, `"` and `'` escaped for HTML text and attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Markdown (CommonMark with tables) as HTML, its headings one level down (the page's own
/// title is the only `h1`).
fn markdown(text: &str) -> String {
    use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd, html};
    let down = |level: HeadingLevel| match level {
        HeadingLevel::H1 => HeadingLevel::H2,
        HeadingLevel::H2 => HeadingLevel::H3,
        HeadingLevel::H3 => HeadingLevel::H4,
        HeadingLevel::H4 => HeadingLevel::H5,
        _ => HeadingLevel::H6,
    };
    let events = Parser::new_ext(text, Options::ENABLE_TABLES).map(|event| match event {
        Event::Start(Tag::Heading {
            level,
            id,
            classes,
            attrs,
        }) => Event::Start(Tag::Heading {
            level: down(level),
            id,
            classes,
            attrs,
        }),
        Event::End(TagEnd::Heading(level)) => Event::End(TagEnd::Heading(down(level))),
        other => other,
    });
    let mut out = String::new();
    html::push_html(&mut out, events);
    out
}

/// An SVG file's document, without its XML declaration, to inline.
pub fn inline_svg(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let start = text.find("<svg").ok_or_else(|| Error::Parse {
        path: path.to_path_buf(),
        location: "start".into(),
        message: "no <svg> element".into(),
    })?;
    Ok(text[start..].to_string())
}

/// A table of rows of cells (the first row is the header), escaped.
pub fn table(rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table>\n");
    for (i, row) in rows.iter().enumerate() {
        let cell = if i == 0 { "th" } else { "td" };
        out.push_str("<tr>");
        for value in row {
            out.push_str(&format!("<{cell}>{}</{cell}>", escape(value)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;\
max-width:980px;margin:2em auto;padding:0 1em;color:#1a1a1a;line-height:1.45}\
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;\
padding-bottom:.2em;margin-top:1.8em}table{border-collapse:collapse;margin:.6em 0}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f4f4f4}dl.figures{display:grid;grid-template-columns:max-content auto;\
gap:.2em 1.2em}dl.figures dt{font-weight:600}dl.figures dd{margin:0}\
figure{margin:1em 0}figcaption{font-weight:600;margin-bottom:.3em}\
svg{max-width:100%;height:auto}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;\
font-size:.85em}footer{margin-top:3em;color:#777;font-size:.85em}";

/// The page as one HTML document.
pub fn render_page(page: &Page) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&page.title),
        escape(&page.title)
    );
    if !page.figures.is_empty() {
        out.push_str("<dl class=\"figures\">\n");
        for (name, value) in &page.figures {
            out.push_str(&format!(
                "<dt>{}</dt><dd>{}</dd>\n",
                escape(name),
                escape(value)
            ));
        }
        out.push_str("</dl>\n");
    }
    if !page.plots.is_empty() {
        out.push_str("<h2>Plots</h2>\n");
        for (title, svg) in &page.plots {
            out.push_str(&format!(
                "<figure>\n<figcaption>{}</figcaption>\n{svg}\n</figure>\n",
                escape(title)
            ));
        }
    }
    for (heading, html) in &page.html {
        out.push_str(&format!("<h2>{}</h2>\n{html}", escape(heading)));
    }
    for (heading, text) in &page.markdown {
        // A text that opens with its own title keeps it (as an h2) instead of `heading`.
        let own_title = text.trim_start().starts_with("# ");
        if !own_title {
            out.push_str(&format!("<h2>{}</h2>\n", escape(heading)));
        }
        out.push_str(&format!("<section>\n{}</section>\n", markdown(text)));
    }
    for (heading, text) in &page.preformatted {
        out.push_str(&format!(
            "<h2>{}</h2>\n<pre>{}</pre>\n",
            escape(heading),
            escape(text)
        ));
    }
    out.push_str(&format!(
        "<footer>Written by dptrain {}. Rebuild with <code>dptrain report</code>.</footer>\n\
         </body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    ));
    out
}

/// Percent with two decimals, or "-".
fn percent(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
}

/// The page of a training run directory, from its records and the plots just drawn
/// (`charts`: (stem, title) of each `<stem>.svg` in the directory).
pub fn run_page(records: &RunRecords, charts: &[(String, String)]) -> Result<Page> {
    let summary = &records.summary;
    let dir = &records.dir;
    let evaluated = summary.evaluated_on.as_str();
    let mut figures = vec![
        (
            format!("{evaluated} accuracy"),
            percent(summary.test_accuracy),
        ),
        (
            "privacy".to_string(),
            match (summary.private, summary.epsilon) {
                (true, Some(epsilon)) => format!(
                    "ε = {epsilon:.4} at δ = {:e} ({} accountant)",
                    summary.guarantee_delta(),
                    summary.accountant.as_deref().unwrap_or("-").to_uppercase()
                ),
                _ => "not private (a non-private baseline: no guarantee)".into(),
            },
        ),
        (
            "steps".into(),
            format!("{} of {}", summary.steps, summary.planned_steps),
        ),
        (
            "batches".into(),
            format!(
                "Poisson sampling, q = {:.6}, expected size {}",
                summary.sample_rate, summary.expected_batch_size
            ),
        ),
        (
            "training time".into(),
            format!("{:.1} s", summary.wall_seconds),
        ),
    ];
    if let Some(auc) = summary.test_auc {
        figures.insert(1, (format!("{evaluated} AUC"), format!("{auc:.4}")));
    }
    if let Some(reason) = &summary.stopped_early {
        figures.push(("stopped early".into(), reason.clone()));
    }
    let mut plots = Vec::new();
    for (stem, title) in charts {
        plots.push((title.clone(), inline_svg(&dir.join(format!("{stem}.svg")))?));
    }
    if dir.join("audit.svg").exists() && dir.join("audit.md").exists() {
        plots.push((
            "privacy audit: canary scores".to_string(),
            inline_svg(&dir.join("audit.svg"))?,
        ));
    }
    let mut html = Vec::new();
    if summary.private {
        let events = records.ledger.events();
        let mut rows = vec![vec![
            "steps".to_string(),
            "sample rate q".into(),
            "noise multiplier σ".into(),
        ]];
        // Consecutive steps with the same q and σ, as one row (at most 12 rows shown).
        let mut blocks: Vec<(u64, f64, f64)> = Vec::new();
        for e in events {
            match blocks.last_mut() {
                Some(last) if last.1 == e.sample_rate && last.2 == e.noise_multiplier => {
                    last.0 += e.steps
                }
                _ => blocks.push((e.steps, e.sample_rate, e.noise_multiplier)),
            }
        }
        for (steps, q, sigma) in blocks.iter().take(12) {
            rows.push(vec![steps.to_string(), format!("{q}"), format!("{sigma}")]);
        }
        let mut text = table(&rows);
        if blocks.len() > 12 {
            text.push_str(&format!(
                "<p>… and {} more blocks: ledger.csv has every step.</p>\n",
                blocks.len() - 12
            ));
        }
        html.push(("Ledger".to_string(), text));
    }
    let statement = read(&dir.join("privacy.md"))?;
    let mut markdown = vec![("Privacy statement".to_string(), statement)];
    if dir.join("audit.md").exists() {
        markdown.push(("Privacy audit".into(), read(&dir.join("audit.md"))?));
    }
    Ok(Page {
        title: format!("dptrain run: {}", records.config.name),
        figures,
        plots,
        markdown,
        preformatted: vec![("Config".into(), read(&dir.join("config.toml"))?)],
        html,
    })
}

/// The page of a federated run directory (`dptrain federate`, `dptrain fl server-step`),
/// from its summary, privacy.md, config.toml and the plots just drawn (`charts`: stem and
/// title).
pub fn federated_page(
    dir: &Path,
    name: &str,
    summary: &serde_json::Value,
    charts: &[(String, String)],
) -> Result<Page> {
    let number = |key: &str| summary[key].as_f64();
    let mut figures = vec![
        (
            "test accuracy".to_string(),
            percent(number("test_accuracy")),
        ),
        (
            "privacy".into(),
            match (summary["private"].as_bool(), number("epsilon")) {
                (Some(false), _) | (_, None) => {
                    "not private (a non-private baseline: no guarantee)".into()
                }
                (_, Some(epsilon)) => format!(
                    "ε = {epsilon:.4} at δ = {:e} for {} ({} accountant)",
                    number("delta").unwrap_or(f64::NAN),
                    summary["unit_of_privacy"].as_str().unwrap_or("-"),
                    summary["accountant"].as_str().unwrap_or("-").to_uppercase()
                ),
            },
        ),
        (
            "rounds".into(),
            format!(
                "{} of {}",
                summary["rounds"].as_u64().unwrap_or(0),
                summary["planned_rounds"].as_u64().unwrap_or(0)
            ),
        ),
        (
            "clients".into(),
            summary["clients"].as_u64().unwrap_or(0).to_string(),
        ),
        (
            "mode".into(),
            summary["mode"].as_str().unwrap_or("-").to_string(),
        ),
        (
            "training time".into(),
            format!("{:.1} s", number("wall_seconds").unwrap_or(f64::NAN)),
        ),
    ];
    if let Some(reason) = summary["stopped_early"].as_str() {
        figures.push(("stopped early".into(), reason.to_string()));
    }
    let mut plots = Vec::new();
    for (stem, title) in charts {
        plots.push((title.clone(), inline_svg(&dir.join(format!("{stem}.svg")))?));
    }
    Ok(Page {
        title: format!("dptrain federated run: {name}"),
        figures,
        plots,
        markdown: vec![("Privacy statement".into(), read(&dir.join("privacy.md"))?)],
        preformatted: vec![("Config".into(), read(&dir.join("config.toml"))?)],
        html: Vec::new(),
    })
}

/// The page of a sweep: its table and trade-off plot (`tradeoff.svg` in `dir`).
pub fn sweep_page(dir: &Path, title: &str, rows: &[SweepRow]) -> Result<Page> {
    let mut cells = vec![vec![
        "run".to_string(),
        "ε".into(),
        "δ".into(),
        "test accuracy".into(),
        "σ".into(),
        "steps".into(),
        "seconds".into(),
    ]];
    for row in rows {
        cells.push(vec![
            match row.private {
                true => format!("{} = {}", row.key, row.value),
                false => "non-private".into(),
            },
            row.epsilon.map_or("-".into(), |e| format!("{e:.3}")),
            match row.private {
                true => format!("{:e}", row.delta),
                false => "-".into(),
            },
            percent(Some(row.test_accuracy)),
            match row.private {
                true => format!("{:.4}", row.noise_multiplier),
                false => "-".into(),
            },
            row.steps.to_string(),
            format!("{:.1}", row.wall_seconds),
        ]);
    }
    let best = rows
        .iter()
        .filter(|r| r.private)
        .max_by(|a, b| a.test_accuracy.total_cmp(&b.test_accuracy));
    let mut figures = vec![("runs".to_string(), rows.len().to_string())];
    if let Some(best) = best {
        figures.push((
            "best private run".into(),
            format!(
                "{} = {}: {} at ε = {}",
                best.key,
                best.value,
                percent(Some(best.test_accuracy)),
                best.epsilon.map_or("-".into(), |e| format!("{e:.3}"))
            ),
        ));
    }
    Ok(Page {
        title: format!("dptrain sweep: {title}"),
        figures,
        plots: vec![(title.to_string(), inline_svg(&dir.join("tradeoff.svg"))?)],
        html: vec![("Runs".into(), table(&cells))],
        ..Page::default()
    })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_markdown_tables_render() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let html = markdown("**ε = 3**\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n");
        assert!(html.contains("<strong>ε = 3</strong>"), "{html}");
        assert!(html.contains("<td>1</td>"), "{html}");
        let page = render_page(&Page {
            title: "t <x>".into(),
            figures: vec![("accuracy".into(), "92.69%".into())],
            ..Page::default()
        });
        assert!(page.contains("<title>t &lt;x&gt;</title>"));
        assert!(page.contains("<dt>accuracy</dt><dd>92.69%</dd>"));
        // Nothing outside the page is referenced.
        assert!(!page.contains("src=") && !page.contains("href="));
    }
}
