//! Request targets for the fuzz targets: built from a route of the default scope table under a
//! team and project, then edited by the fuzzer. Random text almost never spells
//! `/api/billstack/teams/…/projects/…/customers`; starting from real routes lets the fuzzer
//! spend its time on the edits (`%2F`, `..`, `//`, other tenants, Unicode…) around routes that
//! can be allowed. An all-zero input is team A's project A, `GET /customers`.

use billstack_scope_table::EXAMPLES;
use libfuzzer_sys::arbitrary::{self, Arbitrary};

const TEAMS: [&str; 2] = ["team_a", "team_b"];
const PROJECTS: [&str; 3] = ["proj_a", "proj_a2", "proj_b"];

/// A target as the fuzzer describes it.
#[derive(Debug, Arbitrary)]
pub struct BuiltTarget<'a> {
    /// One of `TEAMS`, else `text`.
    team: u8,
    /// One of `PROJECTS`, else `text`.
    project: u8,
    /// A row of the scope table, else `text` as the path below the project.
    route: u8,
    /// Text for whichever of the above is not chosen from its list.
    text: &'a str,
    /// Pieces inserted at byte offsets (taken modulo the length, then down to a character
    /// boundary), in order.
    edits: Vec<(u16, &'a str)>,
}

impl BuiltTarget<'_> {
    /// The target, and the method of the chosen table row (`None` for a route of `text`).
    pub fn build(&self) -> (String, Option<&'static str>) {
        let pick = |i: u8, list: &[&'static str]| list.get(usize::from(i)).copied();
        let team = pick(self.team, &TEAMS).unwrap_or(self.text);
        let project = pick(self.project, &PROJECTS).unwrap_or(self.text);
        let row = EXAMPLES.get(usize::from(self.route));
        let resource = row.map_or(self.text, |(_, path, _)| path);
        let mut target = format!("/api/billstack/teams/{team}/projects/{project}{resource}");
        for (at, piece) in &self.edits {
            let mut at = usize::from(*at) % (target.len() + 1);
            while !target.is_char_boundary(at) {
                at -= 1;
            }
            target.insert_str(at, piece);
        }
        (target, row.map(|(method, _, _)| *method))
    }
}
