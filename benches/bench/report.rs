//! The results: sections of rows, rendered as one Markdown table (on stdout and in
//! BENCHMARKS.md) followed by the notes each section collected.

/// One measured quantity, cell's value next to its baseline.
pub struct Row {
    pub metric: String,
    pub cell: String,
    pub baseline: String,
    pub ratio: String,
    /// The target and whether it was met (`None`: not applicable or not measurable here).
    pub target: Option<(String, Option<bool>)>,
}

impl Row {
    pub fn new(metric: impl Into<String>, cell: impl Into<String>) -> Row {
        Row {
            metric: metric.into(),
            cell: cell.into(),
            baseline: "—".into(),
            ratio: "—".into(),
            target: None,
        }
    }

    pub fn baseline(mut self, baseline: impl Into<String>, ratio: impl Into<String>) -> Row {
        self.baseline = baseline.into();
        self.ratio = ratio.into();
        self
    }

    pub fn target(mut self, target: impl Into<String>, met: Option<bool>) -> Row {
        self.target = Some((target.into(), met));
        self
    }
}

/// One benchmark (a numbered item of the issue).
pub struct Section {
    pub title: String,
    /// What the baseline column is, for this section.
    pub baseline: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(title: impl Into<String>, baseline: impl Into<String>) -> Section {
        Section {
            title: title.into(),
            baseline: baseline.into(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// A section that could not run (a failed cell process, a missing guest): the table says
    /// so instead of the whole benchmark aborting.
    pub fn failed(title: impl Into<String>, why: impl Into<String>) -> Section {
        let mut s = Section::new(title, "—");
        s.row(Row::new(format!("FAILED: {}", why.into()), "—"));
        s
    }
}

fn target_cell(t: &Option<(String, Option<bool>)>) -> String {
    match t {
        None => String::new(),
        Some((t, Some(true))) => format!("✓ {t}"),
        Some((t, Some(false))) => format!("✗ {t}"),
        Some((t, None)) => format!("? {t}"),
    }
}

/// The whole table, in Markdown. Section titles are rows of their own so that one table holds
/// everything and reads well both raw (stdout) and rendered.
pub fn table(sections: &[Section]) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "benchmark".into(),
        "cell".into(),
        "baseline".into(),
        "cell / baseline".into(),
        "target".into(),
    ]];
    for s in sections {
        rows.push([
            format!("**{}**", s.title),
            String::new(),
            format!("*{}*", s.baseline),
            String::new(),
            String::new(),
        ]);
        for r in &s.rows {
            rows.push([
                r.metric.clone(),
                r.cell.clone(),
                r.baseline.clone(),
                r.ratio.clone(),
                target_cell(&r.target),
            ]);
        }
    }
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..5).map(width).collect();
    let line = |r: &[String; 5]| {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |", cells.join(" | "))
    };
    let mut out = line(&rows[0]);
    out.push('\n');
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
    for r in &rows[1..] {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// The notes of every section, as a Markdown list under each section's title.
pub fn notes(sections: &[Section]) -> String {
    let mut out = String::new();
    for s in sections.iter().filter(|s| !s.notes.is_empty()) {
        out.push_str(&format!("- **{}**\n", s.title));
        for n in &s.notes {
            out.push_str(&format!("  - {n}\n"));
        }
    }
    out
}
