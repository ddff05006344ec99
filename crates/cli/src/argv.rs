//! Global flags anywhere on the line. clap hands a subcommand's global
//! arguments down to its own subcommands, never up to the parent, so
//! `isola --json status` would be refused although `isola status --json`
//! works. Before parsing, [`hoist_globals`] moves `--json`, `--server` and
//! `--token` written before the subcommand to just after it, where the
//! subcommand's flattened `ServerArgs` accepts them.

use std::ffi::OsString;

/// Flags that take a value as the next argument (or after `=`).
const WITH_VALUE: [&str; 2] = ["--server", "--token"];
/// Flags that take no value.
const SWITCHES: [&str; 1] = ["--json"];

/// Moves global flags found between the program name and the subcommand
/// to just after the subcommand. Anything else is left as it is for clap
/// to judge, so unknown flags still get clap's own message.
pub fn hoist_globals(args: Vec<OsString>) -> Vec<OsString> {
    let mut iter = args.into_iter();
    let Some(program) = iter.next() else {
        return Vec::new();
    };
    let mut hoisted = Vec::new();
    let mut rest: Vec<OsString> = Vec::new();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        let name = text.split('=').next().unwrap_or_default();
        let whole =
            SWITCHES.contains(&text.as_ref()) || (WITH_VALUE.contains(&name) && text.contains('='));
        if whole {
            hoisted.push(arg);
        } else if WITH_VALUE.contains(&text.as_ref()) {
            hoisted.push(arg);
            hoisted.extend(iter.next());
        } else {
            // The subcommand (or a flag clap will judge): stop looking.
            rest.push(arg);
            rest.extend(iter);
            break;
        }
    }
    let mut out = vec![program];
    let mut rest = rest.into_iter();
    // The subcommand first (or whatever clap will refuse), then the flags.
    out.extend(rest.next());
    out.extend(hoisted);
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::hoist_globals;

    fn hoist(line: &str) -> String {
        let args = line.split(' ').map(Into::into).collect();
        let out: Vec<String> = hoist_globals(args)
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect();
        out.join(" ")
    }

    #[test]
    fn flags_before_the_subcommand_move_after_it() {
        assert_eq!(hoist("isola --json status"), "isola status --json");
        assert_eq!(
            hoist("isola --server http://h:1 --json functions list"),
            "isola functions --server http://h:1 --json list"
        );
        assert_eq!(
            hoist("isola --token=abc kv get k"),
            "isola kv --token=abc get k"
        );
    }

    #[test]
    fn other_lines_are_untouched() {
        for line in [
            "isola status --json",
            "isola functions list --server x",
            "isola --version",
            "isola deploy . -- --json",
            "isola",
        ] {
            assert_eq!(hoist(line), line);
        }
    }
}
