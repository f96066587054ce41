//! The result of one run: a human-readable table and one JSON line (`{"scenario":…,…}`), both on
//! stdout, from the same rows so they cannot disagree.
//!
//! A run with problems (connections that failed, messages lost, a server that misbehaved) still
//! prints everything it measured; `ok` is false and `problems` says why.

use serde_json::{Map, Value};

use crate::usage::{Proc, Snapshot, TCP_COUNTERS, cpu_load};

/// How many times the same kind of problem is spelled out before it is only counted.
pub(crate) const MAX_SAMPLES: usize = 5;

struct Row {
    key: String,
    label: String,
    value: Value,
    unit: &'static str,
}

/// One scenario's results.
pub(crate) struct Report {
    scenario: &'static str,
    rows: Vec<Row>,
    problems: Vec<String>,
    notes: Vec<String>,
}

/// Other processes using more than this many cores of our CPUs make a note.
const FOREIGN_LOAD_NOTE: f64 = 0.05;

/// Run-queue waits above this share of the measured period make a note.
const RUNQUEUE_WAIT_NOTE: f64 = 0.01;

/// Rounds to `digits` decimals, for output only.
pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

impl Report {
    /// An empty report for `scenario`.
    pub(crate) fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            rows: Vec::new(),
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a measurement: `key` in JSON, `label` and `unit` in the table. Floats are written
    /// with 3 decimals.
    pub(crate) fn add(
        &mut self,
        key: impl Into<String>,
        label: impl Into<String>,
        value: impl Into<Value>,
        unit: &'static str,
    ) {
        let value = match value.into() {
            Value::Number(n) if n.is_f64() => {
                n.as_f64().map_or(Value::Null, |f| Value::from(round(f, 3)))
            }
            v => v,
        };
        self.rows.push(Row {
            key: key.into(),
            label: label.into(),
            value,
            unit,
        });
    }

    /// Adds how busy the servers' and this process's CPUs were between `a` and `b`, beyond what
    /// the watched processes used themselves (`server_used` all together, `client_used`, in
    /// cores): on a shared machine, other processes' load disturbs every number, and the reader
    /// must be told. With several servers the `server_*` keys describe them together (their
    /// run-queue waits summed, the union of their CPUs).
    pub(crate) fn add_machine_load(
        &mut self,
        a: &Snapshot,
        b: &Snapshot,
        servers: &[Proc],
        server_used: f64,
        client_used: f64,
    ) {
        let mut server_cpus = Vec::new();
        for server in servers {
            let Ok(cpus) = server.cpus_allowed() else {
                return;
            };
            server_cpus.extend(cpus);
        }
        server_cpus.sort_unstable();
        server_cpus.dedup();
        let Ok(client_cpus) = Proc::Current.cpus_allowed() else {
            return;
        };
        let who = if servers.len() == 1 {
            "server"
        } else {
            "servers (together)"
        };
        let wall = b.at.saturating_duration_since(a.at).as_secs_f64().max(1e-9);
        let server_wait: f64 = b
            .server_wait_since(a)
            .iter()
            .map(std::time::Duration::as_secs_f64)
            .sum();
        let client_wait = b.client_wait.saturating_sub(a.client_wait).as_secs_f64();
        self.add(
            "server_runqueue_wait_s",
            format!("{who} time runnable but not running"),
            server_wait,
            "s",
        );
        self.add(
            "client_runqueue_wait_s",
            "generator time runnable but not running",
            client_wait,
            "s",
        );
        if server_wait / wall > RUNQUEUE_WAIT_NOTE || client_wait / wall > RUNQUEUE_WAIT_NOTE {
            self.note(format!(
                "over {wall:.1} s the {who} waited {server_wait:.3} s and the load generator {client_wait:.3} s for a \
                 CPU held by another thread or process: latencies include that wait"
            ));
        }
        let list = |cpus: &[usize]| {
            cpus.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let s = cpu_load(&a.system, &b.system, &server_cpus);
        let c = cpu_load(&a.system, &b.system, &client_cpus);
        self.add("server_cpus", format!("{who} CPUs"), list(&server_cpus), "");
        self.add("client_cpus", "load generator CPUs", list(&client_cpus), "");
        self.add(
            "server_cpus_irq_cores",
            format!("interrupt time on {who} CPUs"),
            s.irq,
            "cores",
        );
        if server_cpus.iter().any(|cpu| client_cpus.contains(cpu)) {
            self.note("server and load generator share CPUs (pin them apart with taskset to separate their costs)");
            return;
        }
        let other_server = (s.busy - server_used).max(0.0);
        let other_client = (c.busy - client_used).max(0.0);
        self.add(
            "server_cpus_other_cores",
            format!("other processes on {who} CPUs"),
            other_server,
            "cores",
        );
        self.add(
            "client_cpus_other_cores",
            "other processes on generator CPUs",
            other_client,
            "cores",
        );
        if other_server > FOREIGN_LOAD_NOTE || other_client > FOREIGN_LOAD_NOTE {
            self.note(format!(
                "other processes used {other_server:.2} cores of the server's CPUs and {other_client:.2} of the \
                 load generator's while measuring: the machine was shared and these numbers are disturbed"
            ));
        }
    }

    /// Adds the change of the kernel's TCP counters between `a` and `b` (system-wide), with a
    /// note when connections were refused or data waited for a retransmission timeout.
    /// Keys get `prefix` (e.g. `setup_`), labels `during` (e.g. `while the members connected`).
    pub(crate) fn add_tcp_counters(
        &mut self,
        a: &Snapshot,
        b: &Snapshot,
        prefix: &str,
        during: &str,
    ) {
        let mut trouble = Vec::new();
        for (i, &(_, name, key, label)) in TCP_COUNTERS.iter().enumerate() {
            let delta = b
                .tcp
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(a.tcp.get(i).copied().unwrap_or(0));
            self.add(
                format!("{prefix}{key}"),
                format!("{label} {during}"),
                delta,
                "",
            );
            if delta > 0 && matches!(name, "ListenOverflows" | "TCPTimeouts") {
                trouble.push(format!("{delta} {label}"));
            }
        }
        if !trouble.is_empty() {
            self.note(format!(
                "kernel TCP counters (all processes) show {} {during}",
                trouble.join(" and ")
            ));
        }
    }

    /// Records something that makes the run a failure.
    pub(crate) fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }

    /// Records something a reader should know about the numbers.
    pub(crate) fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Whether the run had no problems.
    pub(crate) fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The JSON object: scenario, every row, ok, problems, notes.
    pub(crate) fn json(&self) -> Value {
        let mut map = Map::new();
        map.insert("scenario".to_owned(), Value::from(self.scenario));
        for row in &self.rows {
            map.insert(row.key.clone(), row.value.clone());
        }
        map.insert("ok".to_owned(), Value::from(self.ok()));
        map.insert("problems".to_owned(), Value::from(self.problems.clone()));
        map.insert("notes".to_owned(), Value::from(self.notes.clone()));
        Value::Object(map)
    }

    /// The table.
    pub(crate) fn table(&self) -> String {
        let width = self.rows.iter().map(|r| r.label.len()).max().unwrap_or(0);
        let mut out = format!("== {} ==\n", self.scenario);
        for row in &self.rows {
            let value = match &row.value {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let line = format!("  {:<width$}  {value} {}", row.label, row.unit);
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        for problem in &self.problems {
            out.push_str(&format!("  PROBLEM: {problem}\n"));
        }
        out.push_str(if self.ok() {
            "  result: ok\n"
        } else {
            "  result: FAILED\n"
        });
        out
    }

    /// Prints the table, then the JSON line.
    pub(crate) fn print(&self) {
        println!("{}", self.table());
        println!("{}", self.json());
    }
}

/// Collects up to [`MAX_SAMPLES`] distinct messages and counts the rest.
#[derive(Default)]
pub(crate) struct Samples {
    texts: Vec<String>,
    count: u64,
}

impl Samples {
    /// Adds one occurrence.
    pub(crate) fn push(&mut self, text: String) {
        self.count += 1;
        if self.texts.len() < MAX_SAMPLES && !self.texts.contains(&text) {
            self.texts.push(text);
        }
    }

    /// How many occurrences.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The distinct messages kept, joined.
    pub(crate) fn summary(&self) -> String {
        self.texts.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_table_agree() {
        let mut r = Report::new("demo");
        r.add("sent", "messages sent", 10u64, "");
        r.add("rate", "deliveries/s", 1234.56789, "/s");
        r.add("name", "namespace", "/chat", "");
        let json = r.json().to_string();
        assert_eq!(
            json,
            r#"{"scenario":"demo","sent":10,"rate":1234.568,"name":"/chat","ok":true,"problems":[],"notes":[]}"#
        );
        assert!(
            r.table().contains("  deliveries/s   1234.568 /s\n"),
            "{}",
            r.table()
        );
        r.problem("lost 3");
        assert!(!r.ok());
        assert!(r.table().contains("PROBLEM: lost 3"));
        assert!(
            r.json()
                .to_string()
                .contains(r#""ok":false,"problems":["lost 3"]"#)
        );
    }

    #[test]
    fn samples() {
        let mut s = Samples::default();
        for i in 0..20 {
            s.push(format!("e{}", i % 7));
        }
        assert_eq!(s.count(), 20);
        assert_eq!(s.summary(), "e0 | e1 | e2 | e3 | e4");
    }
}
