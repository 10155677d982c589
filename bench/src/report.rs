//! The benchmark's findings as markdown tables.

use std::fmt::Write;

use crate::ceilings::MIB;
use crate::procfs::PhaseUsage;

/// Whether a figure meets its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Meets it.
    Pass,
    /// Falls short.
    Miss,
    /// No target: context for the other figures.
    Info,
}

impl Verdict {
    /// `Pass` if `met`, else `Miss`.
    pub fn of(met: bool) -> Self {
        if met { Verdict::Pass } else { Verdict::Miss }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Miss => "**MISS**",
            Verdict::Info => "",
        }
    }
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// The figure.
    pub result: String,
    /// The target, if any.
    pub target: String,
    /// Against the target.
    pub verdict: Verdict,
}

/// Everything a run found, in order.
#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<Row>,
    phases: Vec<PhaseUsage>,
    notes: Vec<String>,
}

impl Report {
    /// Adds a figure without a target.
    pub fn info(&mut self, what: impl Into<String>, result: impl Into<String>) {
        self.row(what, result, "", Verdict::Info);
    }

    /// Adds a figure; it is also shown on stderr at once, so a long run shows progress.
    pub fn row(
        &mut self,
        what: impl Into<String>,
        result: impl Into<String>,
        target: impl Into<String>,
        verdict: Verdict,
    ) {
        let row = Row { what: what.into(), result: result.into(), target: target.into(), verdict };
        eprintln!("  {}: {} {} {}", row.what, row.result, row.target, row.verdict.label());
        self.rows.push(row);
    }

    /// Adds the resource use of one phase; a phase of the same name seen before (a repeat) is
    /// added to it.
    pub fn phase(&mut self, usage: PhaseUsage) {
        eprintln!(
            "  [{}] {:.2} s, node CPU {:.2} s ({:.2} s kernel), bench CPU {:.2} s, other CPU {:.2} s, node disk writes {:.0} MiB",
            usage.name,
            usage.wall.as_secs_f64(),
            usage.server_cpu_secs,
            usage.server_sys_secs,
            usage.bench_cpu_secs,
            usage.other_cpu_secs,
            usage.server_write_bytes as f64 / MIB as f64
        );
        match self.phases.iter_mut().find(|phase| phase.name == usage.name) {
            Some(phase) => phase.add(&usage),
            None => self.phases.push(usage),
        }
    }

    /// Adds a line of context printed under the tables.
    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("  note: {note}");
        self.notes.push(note);
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| measurement | result | target | verdict |");
        let _ = writeln!(out, "|---|---:|---|---|");
        for row in &self.rows {
            let _ = writeln!(out, "| {} | {} | {} | {} |", row.what, row.result, row.target, row.verdict.label());
        }
        if !self.phases.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "| phase | wall s | payload MiB | node CPU s (cores) | of which kernel s | bench CPU s (cores) | other CPU s | node disk writes MiB (× payload) |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
            for phase in &self.phases {
                let wall = phase.wall.as_secs_f64().max(1e-9);
                let payload = phase.payload_bytes as f64 / MIB as f64;
                let written = phase.server_write_bytes as f64 / MIB as f64;
                let amplification =
                    if payload > 0.0 { format!(" (× {:.2})", written / payload) } else { String::new() };
                let _ = writeln!(
                    out,
                    "| {} | {:.2} | {:.0} | {:.2} ({:.2}) | {:.2} | {:.2} ({:.2}) | {:.2} | {:.0}{} |",
                    phase.name,
                    wall,
                    payload,
                    phase.server_cpu_secs,
                    phase.server_cpu_secs / wall,
                    phase.server_sys_secs,
                    phase.bench_cpu_secs,
                    phase.bench_cpu_secs / wall,
                    phase.other_cpu_secs,
                    written,
                    amplification
                );
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out);
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}
