//! Shell completion scripts, from clap's own generator.
//!
//! clap_complete (4.6) names the bash function of a subcommand in two ways when the binary's
//! name has a hyphen: `cfa__cli__subcmd__donate` where it walks the words typed, and
//! `cfa__subcmd__cli__subcmd__donate` where it lists that subcommand's flags, so nothing below
//! the first word ever completed (clap-rs/clap#6421). [`script`] renames the second form to the
//! first; when clap fixes it, the rename finds nothing to do and the bash test still holds.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// The binary's name, as shells see it.
const BIN: &str = "cfa-cli";

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut buffer = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut buffer);
    let script = String::from_utf8_lossy(&buffer).into_owned();
    if shell == Shell::Bash {
        let walked = BIN.replace('-', "__");
        let listed = BIN.replace('-', "__subcmd__");
        return script.replace(
            &format!("{listed}__subcmd__"),
            &format!("{walked}__subcmd__"),
        );
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bash_case_a_word_leads_to_has_its_flags() {
        let script = script(Shell::Bash);
        // Each `cmd="…"` the word loop sets must have its own arm listing flags.
        for line in script
            .lines()
            .filter(|l| l.trim_start().starts_with("cmd=\""))
        {
            let name = line
                .trim()
                .trim_start_matches("cmd=\"")
                .trim_end_matches('"');
            if name.is_empty() {
                continue;
            }
            assert!(
                script.contains(&format!("        {name})\n")),
                "no completion arm for {name}"
            );
        }
        assert!(
            !script.contains("cfa__subcmd__cli"),
            "the mismatched names are gone"
        );
    }
}
