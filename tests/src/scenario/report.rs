//! What a scenario run found: every probe's outcome, with the policies as
//! written and with each mutation; the problems are listed all at once,
//! each naming the file, the line and the probe.

use std::{
    collections::BTreeSet,
    fmt::{self, Write as _},
    path::PathBuf,
    time::Duration,
};

use super::spec::{Mutation, Outcome, Probe};

/// One probe, sent.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    pub probe: Probe,
    pub got: Outcome,
    pub elapsed: Duration,
}

impl ProbeResult {
    #[must_use]
    pub fn passed(&self) -> bool {
        self.got == self.probe.expect
    }
}

/// `web-db.toml:88: probe 7 "other → db tcp/3306": other → db 192.0.2.30
/// tcp/3306: expected dropped, got open (12 ms)`.
pub struct Mismatch<'a>(&'a PathBuf, &'a ProbeResult);

impl fmt::Display for Mismatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self(file, r) = self;
        let p = &r.probe;
        write!(
            f,
            "{}:{}: probe {} \"{}\": {}{}: expected {}, got {} ({} ms)",
            file.display(),
            p.line,
            p.index,
            p.name,
            p.route(),
            p.kind.map(|k| format!(" ({k})")).unwrap_or_default(),
            p.expect,
            r.got,
            r.elapsed.as_millis()
        )?;
        if let Some(why) = &p.why {
            write!(f, " [{why}]")?;
        }
        Ok(())
    }
}

/// Every probe of the scenario, sent once with one set of policies.
#[derive(Clone, Debug)]
pub struct Run {
    pub results: Vec<ProbeResult>,
    pub elapsed: Duration,
}

impl Run {
    /// The probes whose outcome was not the expected one.
    pub fn failures(&self) -> impl Iterator<Item = &ProbeResult> {
        self.results.iter().filter(|r| !r.passed())
    }

    #[must_use]
    pub fn failing_names(&self) -> BTreeSet<&str> {
        self.failures().map(|r| r.probe.name.as_str()).collect()
    }

    #[must_use]
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }
}

/// The scenario's probes with one host's policy swapped for a wrong one.
#[derive(Clone, Debug)]
pub struct MutationRun {
    pub mutation: Mutation,
    /// The probes the file says catch it.
    pub declared: BTreeSet<String>,
    pub run: Run,
}

impl MutationRun {
    /// Caught by exactly the declared probes.
    #[must_use]
    pub fn as_declared(&self) -> bool {
        let failing: BTreeSet<String> = self
            .run
            .failing_names()
            .into_iter()
            .map(str::to_string)
            .collect();
        failing == self.declared
    }
}

/// Everything one scenario run found.
#[derive(Clone, Debug)]
pub struct Report {
    pub scenario: String,
    pub file: PathBuf,
    /// `xdp` or `iptables`, as `fw-user load` reported it.
    pub backend: String,
    /// What `fw-user load` said about its choice of backend.
    pub notes: Vec<String>,
    /// Building the lab, starting the services and loading the policies.
    pub setup: Duration,
    /// Of which the namespaces, bridges and veths.
    pub building: Duration,
    /// Of which `fw-user load` (all hosts at once).
    pub loading: Duration,
    /// The policies as written.
    pub baseline: Run,
    pub mutations: Vec<MutationRun>,
}

impl Report {
    /// Every problem, one line each: a probe of the policies as written
    /// that did not get its expected outcome, a mutation no probe caught,
    /// or one caught by other probes than the file says.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .baseline
            .failures()
            .map(|r| Mismatch(&self.file, r).to_string())
            .collect();
        for m in &self.mutations {
            if m.as_declared() {
                continue;
            }
            let mu = &m.mutation;
            let head = format!(
                "{}:{}: mutation \"{}\" ({} loads policy `{}`)",
                self.file.display(),
                mu.line,
                mu.name,
                mu.host,
                mu.policy
            );
            let failing = m.run.failing_names();
            if failing.is_empty() {
                out.push(format!(
                    "{head}: no probe caught it; `caught_by` expected {}",
                    quoted(m.declared.iter().map(String::as_str))
                ));
                continue;
            }
            let missed: Vec<&str> = m
                .declared
                .iter()
                .map(String::as_str)
                .filter(|d| !failing.contains(d))
                .collect();
            if !missed.is_empty() {
                out.push(format!(
                    "{head}: declared in `caught_by` but passed: {}",
                    quoted(missed.into_iter())
                ));
            }
            for r in m.run.failures() {
                if !m.declared.contains(&r.probe.name) {
                    out.push(format!(
                        "{head}: also failed, not in `caught_by`: {}",
                        Mismatch(&self.file, r)
                    ));
                }
            }
        }
        out
    }

    #[must_use]
    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }

    /// The report as `Ok` if it passed, `Err` otherwise.
    ///
    /// # Errors
    /// Some probe or mutation did not go as the file says.
    #[expect(
        clippy::result_large_err,
        reason = "the report is the value either way, made once per scenario"
    )]
    pub fn into_result(self) -> Result<Self, Self> {
        if self.passed() { Ok(self) } else { Err(self) }
    }

    /// Panic with the whole report unless it passed.
    pub fn assert_passed(&self) {
        assert!(self.passed(), "{self}");
    }

    /// Every probe of every run, one line each, with its time: what a
    /// passing run looked like.
    #[must_use]
    pub fn details(&self) -> String {
        let mut out = String::new();
        let runs = std::iter::once(("policies as written".to_string(), &self.baseline, false))
            .chain(
                self.mutations
                    .iter()
                    .map(|m| (format!("mutation \"{}\"", m.mutation.name), &m.run, true)),
            );
        for (label, run, mutated) in runs {
            let _ = writeln!(out, "{label}:");
            for r in &run.results {
                let _ = writeln!(
                    out,
                    "  {:>3} {:<60} {:<52} expect {:<11} got {:<11} {:>5} ms{}",
                    r.probe.index,
                    r.probe.name,
                    r.probe.route(),
                    r.probe.expect.to_string(),
                    r.got.to_string(),
                    r.elapsed.as_millis(),
                    match (r.passed(), mutated) {
                        (true, _) => "",
                        (false, false) => "  <-- differs",
                        (false, true) => "  <-- caught it",
                    }
                );
            }
        }
        out
    }

    /// The report of one mutation run, as the suite would print it had the
    /// wrong policy been the one in the file.
    #[must_use]
    pub fn mutation_failures(&self, name: &str) -> Vec<String> {
        self.mutations
            .iter()
            .find(|m| m.mutation.name == name)
            .map(|m| {
                m.run
                    .failures()
                    .map(|r| Mismatch(&self.file, r).to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problems = self.problems();
        let failed = self.baseline.failures().count();
        write!(
            f,
            "scenario {} ({}, {} backend): {} of {} probes as expected",
            self.scenario,
            self.file.display(),
            self.backend,
            self.baseline.results.len() - failed,
            self.baseline.results.len(),
        )?;
        if !self.mutations.is_empty() {
            write!(
                f,
                "; {} of {} mutations caught as declared",
                self.mutations.iter().filter(|m| m.as_declared()).count(),
                self.mutations.len(),
            )?;
        }
        writeln!(
            f,
            "; setup {:.1} s (lab {:.1} s, loading {:.1} s), probes {:.1} s",
            self.setup.as_secs_f64(),
            self.building.as_secs_f64(),
            self.loading.as_secs_f64(),
            self.baseline.elapsed.as_secs_f64(),
        )?;
        for n in &self.notes {
            writeln!(f, "  {n}")?;
        }
        for m in &self.mutations {
            writeln!(
                f,
                "  mutation \"{}\" ({} with `{}`): caught by {} ({:.1} s)",
                m.mutation.name,
                m.mutation.host,
                m.mutation.policy,
                if m.run.failing_names().is_empty() {
                    "no probe".to_string()
                } else {
                    quoted(m.run.failing_names().into_iter())
                },
                m.run.elapsed.as_secs_f64()
            )?;
        }
        if !problems.is_empty() {
            let plural = if problems.len() == 1 { "" } else { "s" };
            writeln!(f, "{} problem{plural}:", problems.len())?;
            for p in problems {
                writeln!(f, "  {p}")?;
            }
        }
        Ok(())
    }
}
